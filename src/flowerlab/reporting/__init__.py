"""Reporting: tables, figures and the published report, from the files the study wrote."""

from flowerlab.cli import main

raise SystemExit(main())

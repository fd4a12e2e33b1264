// The weight gradient of a float32 2-D convolution (NHWC, stride 1, 'same' padding), with AVX2
// and FMA: dW[kh][kw][ci][co] = sum over images n and pixels (h, w) of
// x[n][h + kh - ph][w + kw - pw][ci] * dy[n][h][w][co] (x is zero outside the image).
//
// Why flowerlab carries it: on CPUs without AVX-512, oneDNN (TensorFlow's fastest CPU kernels)
// has no brgemm weight-gradient kernel, and its older direct one reaches about half the float32
// peak where its forward and input-gradient kernels reach 70-90%. This one reaches 75-94% on the
// study's 3x3 convolutions of 24 px and more past the first (whose 3 input channels leave it near
// half, still faster than oneDNN's): bench/bench_convolutions.py. flowerlab uses it only
// where it is faster: see flowerlab/training/weight_gradients/policy.py and layers.py.
//
// How: an implicit-im2col matrix product, one image at a time. For image row h and kernel row kh,
// the padded input row h + kh laid out as [pixel][ci] holds, from pixel w on, the KW * Ci values
// that output pixel w multiplies, contiguous: dW[kh] (M = KW * Ci rows, Co columns) accumulates
// A^T B with A = those values (a stride of Ci between pixels) and B = dy's row. A 6 x 16 register
// tile (12 accumulators, 6 broadcasts of A, 2 vectors of B per pixel) runs over chunks of pixels
// small enough to stay in the L1 cache. dy is copied into 16-channel panels so that B is read
// sequentially. Each thread sums its own images into its own buffer; the buffers are added in a
// fixed order, so a result is bit-identical from run to run with the same thread count.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

namespace {

constexpr int kTileRows = 6;     // rows of dW (broadcast values of A) per register tile
constexpr int kPanel = 16;       // columns of dW (output channels, two AVX vectors) per tile
constexpr int kChunkPixels = 48; // pixels of a row per pass: A's and B's slices stay in L1

// c[r][0 .. 8 * NV) += sum over `count` pixels k of a[k * a_step + r] * b[k * kPanel ...].
// The accumulators are separate named variables: GCC spills an array of __m256 to the stack on
// every iteration, which halved the speed.
template <int MR, int NV>
inline void tile(const float* __restrict a, long a_step, const float* __restrict b, int count,
                 float* __restrict c, long c_stride) {
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
#define FL_LOAD(r, v, reg) \
  if (MR > r && NV > v) reg = _mm256_loadu_ps(c + r * c_stride + v * 8);
  FL_LOAD(0, 0, c00) FL_LOAD(0, 1, c01) FL_LOAD(1, 0, c10) FL_LOAD(1, 1, c11)
  FL_LOAD(2, 0, c20) FL_LOAD(2, 1, c21) FL_LOAD(3, 0, c30) FL_LOAD(3, 1, c31)
  FL_LOAD(4, 0, c40) FL_LOAD(4, 1, c41) FL_LOAD(5, 0, c50) FL_LOAD(5, 1, c51)
  for (int k = 0; k < count; ++k) {
    const __m256 b0 = _mm256_load_ps(b);
    const __m256 b1 = NV > 1 ? _mm256_load_ps(b + 8) : b0;
    __m256 av;
#define FL_ROW(r, acc0, acc1)                          \
  if (MR > r) {                                        \
    av = _mm256_broadcast_ss(a + r);                   \
    acc0 = _mm256_fmadd_ps(av, b0, acc0);              \
    if (NV > 1) acc1 = _mm256_fmadd_ps(av, b1, acc1);  \
  }
    FL_ROW(0, c00, c01) FL_ROW(1, c10, c11) FL_ROW(2, c20, c21)
    FL_ROW(3, c30, c31) FL_ROW(4, c40, c41) FL_ROW(5, c50, c51)
    a += a_step;
    b += kPanel;
  }
#define FL_STORE(r, v, reg) \
  if (MR > r && NV > v) _mm256_storeu_ps(c + r * c_stride + v * 8, reg);
  FL_STORE(0, 0, c00) FL_STORE(0, 1, c01) FL_STORE(1, 0, c10) FL_STORE(1, 1, c11)
  FL_STORE(2, 0, c20) FL_STORE(2, 1, c21) FL_STORE(3, 0, c30) FL_STORE(3, 1, c31)
  FL_STORE(4, 0, c40) FL_STORE(4, 1, c41) FL_STORE(5, 0, c50) FL_STORE(5, 1, c51)
#undef FL_LOAD
#undef FL_ROW
#undef FL_STORE
}

template <int NV>
inline void tile_rows(int rows, const float* a, long a_step, const float* b, int count, float* c,
                      long c_stride) {
  switch (rows) {
    case 6: tile<6, NV>(a, a_step, b, count, c, c_stride); break;
    case 5: tile<5, NV>(a, a_step, b, count, c, c_stride); break;
    case 4: tile<4, NV>(a, a_step, b, count, c, c_stride); break;
    case 3: tile<3, NV>(a, a_step, b, count, c, c_stride); break;
    case 2: tile<2, NV>(a, a_step, b, count, c, c_stride); break;
    default: tile<1, NV>(a, a_step, b, count, c, c_stride); break;
  }
}

struct Shape {
  int height, width, in_channels, out_channels, kernel_h, kernel_w;
  int padded_out;    // out_channels rounded up to a multiple of 8 (whole vectors)
  int padded_width;  // width + kernel_w - 1
  int rows;          // kernel_w * in_channels: the rows of dW for one kernel row
  int panels;        // ceil(padded_out / kPanel)
};

// Adds one image's contribution to acc (kernel_h x rows x padded_out).
// xpad: (height + kernel_h - 1) x padded_width x in_channels, zero borders;
// dyp: panels x (height * width) x kPanel.
void add_image(const Shape& s, const float* xpad, const float* dyp, float* acc) {
  const long panel_size = (long)s.height * s.width * kPanel;
  for (int h = 0; h < s.height; ++h) {
    for (int w0 = 0; w0 < s.width; w0 += kChunkPixels) {
      const int count = std::min(kChunkPixels, s.width - w0);
      for (int kh = 0; kh < s.kernel_h; ++kh) {
        const float* a_row = xpad + ((long)(h + kh) * s.padded_width + w0) * s.in_channels;
        for (int r0 = 0; r0 < s.rows; r0 += kTileRows) {
          const int rows = std::min(kTileRows, s.rows - r0);
          float* c_row = acc + ((long)kh * s.rows + r0) * s.padded_out;
          for (int c0 = 0; c0 < s.padded_out; c0 += kPanel) {
            const float* b = dyp + (c0 / kPanel) * panel_size + ((long)h * s.width + w0) * kPanel;
            if (s.padded_out - c0 >= kPanel)
              tile_rows<2>(rows, a_row + r0, s.in_channels, b, count, c_row + c0, s.padded_out);
            else
              tile_rows<1>(rows, a_row + r0, s.in_channels, b, count, c_row + c0, s.padded_out);
          }
        }
      }
    }
  }
}

// One thread's work: images first, first + step, ... summed into acc.
void add_images(const Shape& s, const float* x, const float* dy, int first, int step, int images,
                float* acc) {
  const int pad_top = (s.kernel_h - 1) / 2, pad_left = (s.kernel_w - 1) / 2;
  const long pixels = (long)s.height * s.width;
  std::vector<float> xpad((long)(s.height + s.kernel_h - 1) * s.padded_width * s.in_channels, 0.f);
  const size_t dyp_bytes = sizeof(float) * s.panels * pixels * kPanel;
  float* dyp = static_cast<float*>(std::aligned_alloc(32, (dyp_bytes + 31) / 32 * 32));
  if (dyp == nullptr) throw std::bad_alloc();
  std::memset(dyp, 0, dyp_bytes);  // the padding channels stay zero
  for (int n = first; n < images; n += step) {
    const float* xn = x + (long)n * pixels * s.in_channels;
    for (int h = 0; h < s.height; ++h)
      std::memcpy(&xpad[((long)(h + pad_top) * s.padded_width + pad_left) * s.in_channels],
                  xn + (long)h * s.width * s.in_channels, sizeof(float) * s.width * s.in_channels);
    const float* dn = dy + (long)n * pixels * s.out_channels;
    for (int p = 0; p < s.panels; ++p) {
      const int c0 = p * kPanel, width = std::min(kPanel, s.out_channels - c0);
      float* panel = dyp + (long)p * pixels * kPanel;
      for (long q = 0; q < pixels; ++q)
        std::memcpy(panel + q * kPanel, dn + q * s.out_channels + c0, sizeof(float) * width);
    }
    add_image(s, xpad.data(), dyp, acc);
  }
  std::free(dyp);
}

}  // namespace

// x: images x height x width x in_channels; dy: images x height x width x out_channels;
// dw (written): kernel_h x kernel_w x in_channels x out_channels. Returns 0, or 1 when it could
// not allocate its buffers (dw is then unspecified).
extern "C" int flowerlab_conv2d_weight_gradient(const float* x, const float* dy, int images, int height,
                                                int width, int in_channels, int out_channels,
                                                int kernel_h, int kernel_w, float* dw, int threads) {
  Shape s{};
  s.height = height;
  s.width = width;
  s.in_channels = in_channels;
  s.out_channels = out_channels;
  s.kernel_h = kernel_h;
  s.kernel_w = kernel_w;
  s.padded_out = (out_channels + 7) / 8 * 8;
  s.padded_width = width + kernel_w - 1;
  s.rows = kernel_w * in_channels;
  s.panels = (s.padded_out + kPanel - 1) / kPanel;
  threads = std::max(1, std::min(threads, images));
  const long acc_size = (long)kernel_h * s.rows * s.padded_out;
  try {
    std::vector<std::vector<float>> accs(threads, std::vector<float>(acc_size, 0.f));
    std::vector<std::thread> pool;
    std::atomic<bool> failed{false};
    for (int t = 1; t < threads; ++t)
      pool.emplace_back([&, t] {
        try {
          add_images(s, x, dy, t, threads, images, accs[t].data());
        } catch (const std::bad_alloc&) {
          failed = true;
        }
      });
    add_images(s, x, dy, 0, threads, images, accs[0].data());
    for (auto& thread : pool) thread.join();
    if (failed) return 1;
    for (long row = 0; row < (long)kernel_h * s.rows; ++row)
      for (int co = 0; co < out_channels; ++co) {
        float sum = 0.f;
        for (int t = 0; t < threads; ++t) sum += accs[t][row * s.padded_out + co];
        dw[row * out_channels + co] = sum;
      }
  } catch (const std::bad_alloc&) {
    return 1;
  }
  return 0;
}

// Convolutions of NHWC inputs with HWIO kernels (float32, no dilation, one group) for
// XLA:CPU, as XLA FFI handlers: the forward pass here, the weight gradient in
// weight_grad.cc, what both share in conv_common.h.
//
//   forward: y[n, v, u, o]  = sum over (i, j, c) of xpad[n, v*sh+i, u*sw+j, c] * w[i, j, c, o]
//   weight:  dW[i, j, c, o] = sum over (n, v, u) of xpad[n, v*sh+i, u*sw+j, c] * dy[n, v, u, o]
//
// Both are GEMMs whose small dimensions (channels, kh*kw*C) fit a block of
// accumulators in vector registers: the weight gradient's K = N*H*W is huge, and
// XLA:CPU's Eigen kernel and its dots run such skinny GEMMs at a fraction of the
// machine's speed; its forward convolution loses at 16 channels (benchmarks/README.md).
// A block keeps kRows x kTiles accumulators while the K dimension streams through: for
// the weight gradient each output pixel's dy[o] row is loaded once per block and each
// of the block's inputs xpad[p + offset[m]] is broadcast into it; for the forward pass
// each kernel row w[m, o] is loaded once and each of a block's pixels broadcast into it
// (a window row's kw * C taps in one loop: they are contiguous in the padded input).
// Images are padded a chunk at a time (L2-sized) by the thread that uses them. The work
// is cut into a fixed number of parts over the batch that XLA's intra-op thread pool
// runs; the weight gradient sums its parts' buffers in part order, so no result
// depends on which thread ran what (bit-reproducible).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "conv_common.h"
#include "parallel_for.h"

namespace ffi = xla::ffi;
using namespace redconv;  // NOLINT: the kernels' own shared vocabulary

namespace {

// y[p, o0 + t * kLanes ...] for the kPixels output pixels of one row starting at xp
// (their first window's top-left input, padded), pixel stride sw * C.
template <int kPixels, int kTiles>
void ForwardBlock(const Geometry& g, const float* xp, const float* w, int64_t o0,
                  float* out) {
  Vec acc[kPixels][kTiles];
  for (int p = 0; p < kPixels; ++p)
    for (int t = 0; t < kTiles; ++t) acc[p][t] = Vec{};
  const int64_t pixel_stride = g.sw * g.c;
  // A window row's taps (j, c) are contiguous in the padded input and in the kernel:
  // one loop of kw * C steps per row, in the (j, c) order of the sums.
  const int64_t row_taps = g.kw * g.c;
  for (int64_t i = 0; i < g.kh; ++i) {
    const float* x_row = xp + i * g.wp * g.c;
    const float* w_row = w + i * row_taps * g.o + o0;
    for (int64_t jc = 0; jc < row_taps; ++jc) {
      Vec wv[kTiles];
      for (int t = 0; t < kTiles; ++t)
        wv[t] = LoadVecToRegister(w_row + jc * g.o + t * kLanes);
      for (int p = 0; p < kPixels; ++p) {
        const Vec a = x_row[p * pixel_stride + jc] - Vec{};  // broadcast
        for (int t = 0; t < kTiles; ++t) acc[p][t] += a * wv[t];
      }
    }
  }
  for (int p = 0; p < kPixels; ++p)
    for (int t = 0; t < kTiles; ++t)
      StoreVec(out + p * g.o + o0 + t * kLanes, acc[p][t]);
}

// Output channels past the last whole vector: scalar.
void ForwardTail(const Geometry& g, const float* xp, const float* w, int64_t pixels,
                 int64_t o0, float* out) {
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t o = o0; o < g.o; ++o) {
      float sum = 0.0f;
      for (int64_t i = 0; i < g.kh; ++i)
        for (int64_t j = 0; j < g.kw; ++j)
          for (int64_t c = 0; c < g.c; ++c)
            sum += xp[p * g.sw * g.c + (i * g.wp + j) * g.c + c] *
                   w[((i * g.kw + j) * g.c + c) * g.o + o];
      out[p * g.o + o] = sum;
    }
}

struct ForwardKernel {
  template <int kPixels, int kTiles> static constexpr auto kFn = &ForwardBlock<kPixels, kTiles>;
};

// The outputs of images [n0, n1).
void ForwardPart(const Geometry& g, const float* x, const float* w, int64_t n0, int64_t n1,
                 float* y) {
  ForEachChunk(g, x, n0, n1, [&](int64_t c0, int64_t c1, const float* xpad) {
    for (int64_t b = c0; b < c1; ++b)
      for (int64_t v = 0; v < g.ho; ++v) {
        const float* x_row = xpad + ((b - c0) * g.hp + v * g.sh) * g.wp * g.c;
        float* y_row = y + (b * g.ho + v) * g.wo * g.o;
        const int64_t o0 = ForEachBlock<ForwardKernel>(
            g.wo, g.o, [&](auto block, int64_t u, int64_t o0, int, int) {
              block(g, x_row + u * g.sw * g.c, w, o0, y_row + u * g.o);
            });
        if (o0 < g.o) ForwardTail(g, x_row, w, g.wo, o0, y_row);
      }
  });
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> lhs, ffi::Buffer<ffi::F32> rhs,
                   ffi::ResultBuffer<ffi::F32> out, int64_t pad_top, int64_t pad_left,
                   int64_t stride_h, int64_t stride_w) {
  Geometry g;
  if (!MakeGeometry(lhs.dimensions(), rhs.dimensions(), out->dimensions(), pad_top, pad_left,
                    stride_h, stride_w, &g))
    return ffi::Error::InvalidArgument(
        "conv forward: expected x [N, H, W, C], w [kh, kw, C, O], y [N, H', W', O]");
  ParallelForImages(pool, lhs.dimensions()[0], 8, [&](int64_t n0, int64_t n1) {
    ForwardPart(g, lhs.typed_data(), rhs.typed_data(), n0, n1, out->typed_data());
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvConvForward, Forward, ConvBinding());

// The vector width the library was built with (`python -m models.conv_kernels` prints
// it): 16 floats with AVX-512, 8 with AVX2 or NEON pairs.
extern "C" int RedconvVectorLanes() { return redconv::kLanes; }

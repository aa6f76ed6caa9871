// The weight gradient of a 3x3, stride-1 convolution (NHWC x HWIO, float32) by Winograd's
// F(3x3, 2x2), as an XLA FFI handler (the forward pass: winograd.cc). Every 2x2 tile e of
// the output gradient dy meets the 4x4 patch d of the padded input its outputs read, and
// its share of the gradient, dW[i, j] = sum over (a, b) of d[a + i, b + j] e[a, b], is
//
//   dW = G^T [ (A e A^T) (.) (B^T d B) ] G     ((.): elementwise, 4x4)
//
// with the forward pass's B, G and A (the transpose of F(2x2, 3x3)'s bilinear form). The
// outer transform is linear, so the products are summed over all tiles first: 16 GEMMs
// M[xi][c][o] = sum over tiles t of V[xi][t][c] * E[xi][t][o] (V: transformed inputs, E:
// transformed output gradients), then one transform G^T M G per (c, o). That is 16
// multiply-adds per tile and channel pair where the direct kernel (weight_grad.cc) does
// 36; the transforms are additions and halvings.
//
// The GEMMs' register blocks are the forward kernel's (winograd.h) with the roles
// turned: rows of input channels, vectors of output channels, K the tiles streaming
// through. The work is cut into a fixed number of parts over the batch; each part sums
// its tiles in one order into its own M, and the parts are added in part order: the
// same bits whatever thread runs what.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "conv_common.h"
#include "parallel_for.h"
#include "winograd.h"

namespace ffi = xla::ffi;
using namespace redconv;  // NOLINT: the kernels' own shared vocabulary

namespace {

// E[xi][t][o0 ...] = (A e A^T)[xi] for the 2x2 tile e of dy at dp (its second row and
// column, past the edge of an odd-sized output, are zeros), A = [[1, 0], [1, 1],
// [1, -1], [0, -1]].
inline void TransformOutputGrad(const float* dp, int64_t row, int64_t o, bool second_row,
                                bool second_col, int64_t e_stride, float* e) {
  const Vec zero = Vec{};
  const Vec e00 = LoadVec(dp), e01 = second_col ? LoadVec(dp + o) : zero;
  const Vec e10 = second_row ? LoadVec(dp + row) : zero;
  const Vec e11 = second_row && second_col ? LoadVec(dp + row + o) : zero;
  const Vec r[4][2] = {{e00, e01}, {e00 + e10, e01 + e11}, {e00 - e10, e01 - e11},
                       {zero - e10, zero - e11}};  // A e
  for (int k = 0; k < 4; ++k) {  // (A e) A^T
    StoreVec(e + (k * 4 + 0) * e_stride, r[k][0]);
    StoreVec(e + (k * 4 + 1) * e_stride, r[k][0] + r[k][1]);
    StoreVec(e + (k * 4 + 2) * e_stride, r[k][0] - r[k][1]);
    StoreVec(e + (k * 4 + 3) * e_stride, zero - r[k][1]);
  }
}

// M [16, C, O] += the products of the tiles of images [n0, n1) (M zeroed by the caller).
void WeightGradPart(const Geometry& g, const float* x, const float* dy, int64_t n0,
                    int64_t n1, float* m) {
  std::vector<float> v, e;
  const int64_t dy_row = g.wo * g.o;
  ForEachTileGroup(g, x, n0, n1, &v, [&](int64_t count, auto tile) {
    const int64_t v_stride = PositionStride(count, g.c);
    const int64_t e_stride = PositionStride(count, g.o);
    e.resize(kTransformed * e_stride);
    for (int64_t t = 0; t < count; ++t) {
      const Tile at = tile(t);
      const float* dp = dy + ((at.b * g.ho + at.y) * g.wo + at.x) * g.o;
      for (int64_t o0 = 0; o0 < g.o; o0 += kLanes)
        TransformOutputGrad(dp + o0, dy_row, g.o, at.y + 1 < g.ho, at.x + 1 < g.wo, e_stride,
                            e.data() + t * g.o + o0);
    }
    for (int xi = 0; xi < kTransformed; ++xi)
      ForEachBlock<GemmKernel<true>>(g.c, g.o, [&](auto block, int64_t r0, int64_t o0, int,
                                                   int) {
        block(v.data() + xi * v_stride + r0, e.data() + xi * e_stride + o0, count, g.c, g.o,
              m + (xi * g.c + r0) * g.o + o0);
      });
  });
}

// dW[i][j][c][o0 ...] = (G^T M G)[i][j], G^T = [[1, 1/2, 1/2, 0], [0, 1/2, -1/2, 0],
// [0, 1/2, 1/2, 1]].
void TransformWeightGrad(const float* m, int64_t c, int64_t o, float* dw) {
  const Vec half = Vec{} + 0.5f;
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t o0 = 0; o0 < o; o0 += kLanes) {
      Vec p[3][4];  // G^T M
      for (int l = 0; l < 4; ++l) {
        const Vec m0 = LoadVec(m + ((0 * 4 + l) * c + ci) * o + o0),
                  m1 = LoadVec(m + ((1 * 4 + l) * c + ci) * o + o0),
                  m2 = LoadVec(m + ((2 * 4 + l) * c + ci) * o + o0),
                  m3 = LoadVec(m + ((3 * 4 + l) * c + ci) * o + o0);
        p[0][l] = m0 + half * (m1 + m2);
        p[1][l] = half * (m1 - m2);
        p[2][l] = half * (m1 + m2) + m3;
      }
      for (int i = 0; i < 3; ++i) {  // (G^T M) G
        float* dst = dw + (i * 3 * c + ci) * o + o0;
        StoreVec(dst, p[i][0] + half * (p[i][1] + p[i][2]));
        StoreVec(dst + c * o, half * (p[i][1] - p[i][2]));
        StoreVec(dst + 2 * c * o, half * (p[i][1] + p[i][2]) + p[i][3]);
      }
    }
}

ffi::Error WinogradWeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> lhs,
                              ffi::Buffer<ffi::F32> out_grad,
                              ffi::ResultBuffer<ffi::F32> kernel_grad, int64_t pad_top,
                              int64_t pad_left, int64_t stride_h, int64_t stride_w) {
  Geometry g;
  if (!MakeGeometry(lhs.dimensions(), kernel_grad->dimensions(), out_grad.dimensions(),
                    pad_top, pad_left, stride_h, stride_w, &g) || !WholeTiles(&g))
    return ffi::Error::InvalidArgument(WinogradShapeError("winograd conv weight gradient"));
  // The 16 GEMMs' sums over fixed parts of the batch (as weight_grad.cc), then G^T M G.
  const std::vector<float> m = SumOverImageParts(
      pool, lhs.dimensions()[0], 4, kTransformed * g.c * g.o,
      [&](int64_t n0, int64_t n1, float* partial) {
        WeightGradPart(g, lhs.typed_data(), out_grad.typed_data(), n0, n1, partial);
      });
  TransformWeightGrad(m.data(), g.c, g.o, kernel_grad->typed_data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvConvWinogradWeightGrad, WinogradWeightGrad,
                              ConvBinding());

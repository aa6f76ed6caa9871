// The 3x3, stride-1 forward convolution of NHWC inputs with HWIO kernels (float32) by
// Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016), as an XLA FFI handler. Every 2x2 block of
// outputs ("tile") reads a 4x4 patch d of the padded input; per input channel c and
// output channel o
//
//   Y = A^T [ sum over c of (G g G^T) (.) (B^T d B) ] A     ((.): elementwise, 4x4)
//
// with g the 3x3 kernel. The sum is 16 independent GEMMs, one per position xi of the 4x4
// transforms: M[xi][t][o] = sum over c of V[xi][t][c] * U[xi][c][o] (t: tiles, V the
// transformed inputs, U the transformed kernel): 16 multiply-adds per tile and channel
// pair where the direct kernel (conv.cc) does 36, so 2.25x fewer; the transforms are
// additions only (and halvings of the kernel), but they load and store every value: at
// 16 channels in and out they took ~2/3 of the time and lost to the direct kernel, so
// `winograd_applies` (__init__.py) sends only layers with 32 or more channels here. The
// results differ from the direct sums by float32 rounding only: the transforms'
// constants are 0, +-1 and 1/2, exact in binary.
//
// The GEMMs reuse conv.cc's register blocking (conv_common.h: rows x tiles of
// accumulators, the rows being Winograd tiles here). Tiles are taken in groups whose V
// and M (~256 KiB) stay in L2 from the input transform through the output transform.
// The work is cut into a fixed number of parts over the batch, each output computed by
// one part in one order: bit-reproducible whatever thread runs what.
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

// U[xi][c][o] = (G g G^T)[xi] for the kernel w [3, 3, C, O], O a multiple of kLanes:
// G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
void TransformKernel(const float* w, int64_t c, int64_t o, float* u) {
  const Vec half = Vec{} + 0.5f;
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t o0 = 0; o0 < o; o0 += kLanes) {
      Vec g[3][3];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g[i][j] = LoadVec(w + ((i * 3 + j) * c + ci) * o + o0);
      Vec t[4][3];  // G g
      for (int j = 0; j < 3; ++j) {
        t[0][j] = g[0][j];
        t[1][j] = half * (g[0][j] + g[1][j] + g[2][j]);
        t[2][j] = half * (g[0][j] - g[1][j] + g[2][j]);
        t[3][j] = g[2][j];
      }
      for (int k = 0; k < 4; ++k) {  // (G g) G^T
        const Vec row[4] = {t[k][0], half * (t[k][0] + t[k][1] + t[k][2]),
                            half * (t[k][0] - t[k][1] + t[k][2]), t[k][2]};
        for (int l = 0; l < 4; ++l) StoreVec(u + ((k * 4 + l) * c + ci) * o + o0, row[l]);
      }
    }
}

// The outputs of images [n0, n1): per group of tiles (winograd.h), the input transform,
// the 16 GEMMs and the output transform A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].
void WinogradPart(const Geometry& g, const float* x, const float* u, int64_t n0, int64_t n1,
                  float* y) {
  std::vector<float> v, m;
  ForEachTileGroup(g, x, n0, n1, &v, [&](int64_t count, auto tile) {
    const int64_t v_stride = PositionStride(count, g.c);
    const int64_t m_stride = PositionStride(count, g.o);
    m.resize(kTransformed * m_stride);
    for (int xi = 0; xi < kTransformed; ++xi)
      ForEachBlock<GemmKernel<false>>(count, g.o, [&](auto block, int64_t r0, int64_t o0, int,
                                                      int) {
        block(v.data() + xi * v_stride + r0 * g.c, u + xi * g.c * g.o + o0, g.c, g.c, g.o,
              m.data() + xi * m_stride + r0 * g.o + o0);
      });
    for (int64_t t = 0; t < count; ++t) {
      const Tile at = tile(t);
      const bool second_row = at.y + 1 < g.ho, second_col = at.x + 1 < g.wo;
      float* out = y + ((at.b * g.ho + at.y) * g.wo + at.x) * g.o;
      for (int64_t o0 = 0; o0 < g.o; o0 += kLanes) {
        const float* mp = m.data() + t * g.o + o0;
        Vec s[2][4];  // A^T m
        for (int l = 0; l < 4; ++l) {
          const Vec m0 = LoadVec(mp + (0 * 4 + l) * m_stride),
                    m1 = LoadVec(mp + (1 * 4 + l) * m_stride),
                    m2 = LoadVec(mp + (2 * 4 + l) * m_stride),
                    m3 = LoadVec(mp + (3 * 4 + l) * m_stride);
          s[0][l] = m0 + m1 + m2;
          s[1][l] = m1 - m2 - m3;
        }
        for (int i = 0; i < (second_row ? 2 : 1); ++i) {  // (A^T m) A
          float* dst = out + i * g.wo * g.o + o0;
          StoreVec(dst, s[i][0] + s[i][1] + s[i][2]);
          if (second_col) StoreVec(dst + g.o, s[i][1] - s[i][2] - s[i][3]);
        }
      }
    }
  });
}

ffi::Error Winograd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> lhs, ffi::Buffer<ffi::F32> rhs,
                    ffi::ResultBuffer<ffi::F32> out, int64_t pad_top, int64_t pad_left,
                    int64_t stride_h, int64_t stride_w) {
  Geometry g;
  if (!MakeGeometry(lhs.dimensions(), rhs.dimensions(), out->dimensions(), pad_top, pad_left,
                    stride_h, stride_w, &g) || !WholeTiles(&g))
    return ffi::Error::InvalidArgument(WinogradShapeError("winograd conv"));
  std::vector<float> u(kTransformed * g.c * g.o);
  TransformKernel(rhs.typed_data(), g.c, g.o, u.data());
  ParallelForImages(pool, lhs.dimensions()[0], 8, [&](int64_t n0, int64_t n1) {
    WinogradPart(g, lhs.typed_data(), u.data(), n0, n1, out->typed_data());
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvConvWinograd, Winograd, ConvBinding());

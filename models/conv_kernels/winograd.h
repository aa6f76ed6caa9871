// What Winograd's F(2x2, 3x3) forward pass (winograd.cc) and weight gradient
// (winograd_weight_grad.cc) share: the input transform of 4x4 patches and the walk over
// groups of 2x2 output tiles. Both take 3x3 kernels at stride 1 whose channels fill whole
// vectors; the transforms' constants (0, +-1, 1/2) are exact in binary.
#ifndef REDCONV_WINOGRAD_H_
#define REDCONV_WINOGRAD_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "conv_common.h"

namespace redconv {

constexpr int kTransformed = 16;  // positions of the 4x4 transforms
// Tiles are taken in groups whose transformed values (~256 KiB) stay in L2 between the
// transforms and the GEMMs.
constexpr int64_t kGroupBytes = 256 << 10;

// Whether g is a 3x3, stride-1 convolution with C and O multiples of kLanes; if so, the
// padded input is widened to whole 2x2 tiles: it spans an even number of output rows and
// columns (Pad fills the extra row or column with zeros; no output is read or written
// there).
inline bool WholeTiles(Geometry* g) {
  if (g->kh != 3 || g->kw != 3 || g->sh != 1 || g->sw != 1 || g->c % kLanes != 0 ||
      g->o % kLanes != 0)
    return false;
  g->hp = (g->ho + 1) / 2 * 2 + 2;
  g->wp = (g->wo + 1) / 2 * 2 + 2;
  return true;
}

// V[xi][t][c0 ...] = (B^T d B)[xi] for the 4x4 patch d at xp (row stride `row`, pixel
// stride C), B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
inline void TransformInput(const float* xp, int64_t row, int64_t c, int64_t c0,
                           int64_t v_stride, float* v) {
  Vec d[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) d[i][j] = LoadVec(xp + i * row + j * c + c0);
  Vec r[4][4];  // B^T d
  for (int j = 0; j < 4; ++j) {
    r[0][j] = d[0][j] - d[2][j];
    r[1][j] = d[1][j] + d[2][j];
    r[2][j] = d[2][j] - d[1][j];
    r[3][j] = d[1][j] - d[3][j];
  }
  for (int k = 0; k < 4; ++k) {  // (B^T d) B
    StoreVec(v + (k * 4 + 0) * v_stride, r[k][0] - r[k][2]);
    StoreVec(v + (k * 4 + 1) * v_stride, r[k][1] + r[k][2]);
    StoreVec(v + (k * 4 + 2) * v_stride, r[k][2] - r[k][1]);
    StoreVec(v + (k * 4 + 3) * v_stride, r[k][1] - r[k][3]);
  }
}

// The distance between a group's 16 transformed positions of `count` rows of `channels`:
// one cache line more than the rows take, so that the 16 rows a tile writes (or a GEMM
// block reads) do not all fall into one L1 set when count * channels * 4 bytes is a
// multiple of 4 KiB (64 tiles of 32 channels: 8 KiB).
inline int64_t PositionStride(int64_t count, int64_t channels) {
  return count * channels + 64 / 4;
}

// A tile: image b of the batch, its top-left output pixel (y, x), both even.
struct Tile { int64_t b, y, x; };

// Calls fn(count, tile) for the images [n0, n1) in groups of `count` tiles (of even
// size, at most those whose transforms of C + O channels fit kGroupBytes), after writing
// the group's transformed inputs V[xi][t][c] (row stride C, position stride
// PositionStride(count, C)) into v; tile(t) gives the group's t-th tile. Chunks of
// images are padded as in conv.cc (ForEachChunk); the order of the tiles is fixed by the
// shapes alone.
template <typename F>
void ForEachTileGroup(const Geometry& g, const float* x, int64_t n0, int64_t n1,
                      std::vector<float>* v, F fn) {
  const int64_t tw = (g.wo + 1) / 2, image_tiles = (g.ho + 1) / 2 * tw;
  const int64_t group = std::max<int64_t>(
      kMaxRows, kGroupBytes / (kTransformed * (g.c + g.o) * 4));
  v->resize(kTransformed * PositionStride(group, g.c));
  const int64_t row = g.wp * g.c;
  ForEachChunk(g, x, n0, n1, [&](int64_t c0, int64_t c1, const float* xpad) {
    const int64_t tiles = (c1 - c0) * image_tiles;
    const int64_t groups = (tiles + group - 1) / group;
    for (int64_t gi = 0, t0 = 0; gi < groups; ++gi) {
      // Groups of even size (49 = 25 + 24, not 42 + 7): few rows starve the GEMM blocks.
      const int64_t count = tiles / groups + (gi < tiles % groups);
      auto tile = [&](int64_t t) {
        const int64_t k = t0 + t;
        return Tile{c0 + k / image_tiles, 2 * (k % image_tiles / tw), 2 * (k % tw)};
      };
      for (int64_t t = 0; t < count; ++t) {
        const Tile at = tile(t);
        const float* xp = xpad + (((at.b - c0) * g.hp + at.y) * g.wp + at.x) * g.c;
        for (int64_t ci = 0; ci < g.c; ci += kLanes)
          TransformInput(xp, row, g.c, ci, PositionStride(count, g.c),
                         v->data() + t * g.c + ci);
      }
      fn(count, tile);
      t0 += count;
    }
  });
}

// The 16 GEMMs' register blocks (conv_common.h's rows x tiles of accumulators):
// m[r][o0 + t * kLanes ...] = (kIntoWeights: +=) sum over k < count of
// a(r, k) * b[k][o0 + t * kLanes ...], b and m rows of O. The forward pass's rows are
// tiles and k its input channels, a(r, k) = a[r * stride + k]; the weight gradient's
// rows are input channels and k the group's tiles, a(r, k) = a[k * stride + r], summed
// into m from group to group.
template <bool kIntoWeights, int kRows, int kTiles>
void GemmBlock(const float* a, const float* b, int64_t count, int64_t stride, int64_t o,
               float* m) {
  Vec acc[kRows][kTiles];
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < kTiles; ++t)
      acc[r][t] = kIntoWeights ? LoadVec(m + r * o + t * kLanes) : Vec{};
  for (int64_t k = 0; k < count; ++k) {
    Vec bv[kTiles];
    for (int t = 0; t < kTiles; ++t) bv[t] = LoadVecToRegister(b + k * o + t * kLanes);
    for (int r = 0; r < kRows; ++r) {
      const Vec av = (kIntoWeights ? a[k * stride + r] : a[r * stride + k]) - Vec{};
      for (int t = 0; t < kTiles; ++t) acc[r][t] += av * bv[t];  // av: a broadcast
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < kTiles; ++t) StoreVec(m + r * o + t * kLanes, acc[r][t]);
}

template <bool kIntoWeights>
struct GemmKernel {
  template <int kRows, int kTiles>
  static constexpr auto kFn = &GemmBlock<kIntoWeights, kRows, kTiles>;
};

// The handlers' message for shapes they do not take.
inline std::string WinogradShapeError(const char* what) {
  return std::string(what) + ": expected x [N, H, W, C], w [3, 3, C, O], y [N, H', W', O], "
         "stride 1, C and O multiples of " + std::to_string(kLanes);
}

}  // namespace redconv

#endif  // REDCONV_WINOGRAD_H_

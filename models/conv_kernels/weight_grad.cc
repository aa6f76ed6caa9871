// The weight gradient of an NHWC x HWIO convolution (float32, no dilation, one group) for
// XLA:CPU, as an XLA FFI handler (the forward pass and the design: conv.cc):
//
//   dW[i, j, c, o] = sum over (n, v, u) of xpad[n, v*sh+i, u*sw+j, c] * dy[n, v, u, o]
//
// Two register blockings of the same sums: Block (vector lanes over output channels)
// and ChannelBlock (lanes over input channels, for C a multiple of the vector width and
// fewer than two vectors of outputs), each element summed in the same order by both.
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

// acc[r][t] += xpad[p + offset[r]] * dy[p, o0 + t * kLanes ...] over the output rows
// [y0, y1) of image n; the accumulators come from and go back to `state` (a chunk's
// sums are carried from one row range to the next, so each element sums its products in
// pixel order whatever the ranges).
template <int kRows, int kTiles>
void Block(const Geometry& g, const float* xpad, const float* dy, const int64_t* offset,
           int64_t n, int64_t y0, int64_t y1, int64_t o0, float* state) {
  Vec acc[kRows][kTiles];
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < kTiles; ++t) acc[r][t] = LoadVec(state + (r * kTiles + t) * kLanes);
  int64_t off[kRows];
  for (int r = 0; r < kRows; ++r) off[r] = offset[r];
  for (int64_t y = y0; y < y1; ++y) {
    const float* x_row = xpad + (n * g.hp + y * g.sh) * g.wp * g.c;
    const float* dy_row = dy + (n * g.ho + y) * g.wo * g.o + o0;
    for (int64_t x = 0; x < g.wo; ++x) {
      const float* xp = x_row + x * g.sw * g.c;
      const float* dp = dy_row + x * g.o;
      Vec d[kTiles];
      for (int t = 0; t < kTiles; ++t) d[t] = LoadVecToRegister(dp + t * kLanes);
      for (int r = 0; r < kRows; ++r) {
        const Vec a = xp[off[r]] - Vec{};  // broadcast
        for (int t = 0; t < kTiles; ++t) acc[r][t] += a * d[t];
      }
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < kTiles; ++t) StoreVec(state + (r * kTiles + t) * kLanes, acc[r][t]);
}

// Output channels past the last whole vector (O not a multiple of kLanes): scalar.
void Tail(const Geometry& g, const float* xpad, const float* dy, const int64_t* offset,
          int64_t rows, int64_t n0, int64_t n1, int64_t o0, float* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = o0; o < g.o; ++o) {
      float sum = 0.0f;
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t y = 0; y < g.ho; ++y)
          for (int64_t x = 0; x < g.wo; ++x)
            sum += xpad[((n * g.hp + y * g.sh) * g.wp + x * g.sw) * g.c + offset[r]] *
                   dy[((n * g.ho + y) * g.wo + x) * g.o + o];
      out[r * g.o + o] += sum;
    }
}

struct WeightGradKernel {
  template <int kRows, int kTiles> static constexpr auto kFn = &Block<kRows, kTiles>;
};

// Output rows per range: the rows of one image whose x and dy take ~48 KiB where an
// image fits the L2-sized chunk (the CNN's 14x14 and ResNet-20's layers), ~24 KiB where
// it does not (U-Net levels of 32x32 and more); every block passes over a range while
// it stays in L1/L2. Measured on a 2-core AVX2 EPYC (benchmarks/README.md): streaming
// the whole chunk through each block in turn, as before, ran the small images' weight
// gradients 6-20% slower (the CNN's conv2 13.0 against 10.6 ms); 48 KiB ranges over the
// U-Net's large images were no faster than 24 KiB.
int64_t RowsPerRange(const Geometry& g) {
  const int64_t range_bytes = ImageBytes(g) <= kChunkBytes ? 48 << 10 : 24 << 10;
  const int64_t row_bytes = (g.wo * g.o + g.sh * g.wp * g.c) * 4;
  return std::max<int64_t>(1, range_bytes / row_bytes);
}

// The gradient over images [n0, n1), accumulated into out [M, O] (zeroed by the caller):
// per chunk, the blocks over its row ranges (RowsPerRange); the accumulators are carried
// in `state`, so each element sums its products in pixel order whatever the ranges (the
// same sums to the bit).
void Part(const Geometry& g, const float* x, const float* dy_all,
          const std::vector<int64_t>& offset, int64_t n0, int64_t n1, float* out) {
  const int64_t rows_total = static_cast<int64_t>(offset.size());
  using BlockFn = decltype(WeightGradKernel::kFn<1, 1>);
  struct Blk { BlockFn fn; int64_t m0, o0, rows, tiles, state; };
  std::vector<Blk> blocks;
  int64_t state_floats = 0;
  const int64_t o_vec = ForEachBlock<WeightGradKernel>(
      rows_total, g.o, [&](auto block, int64_t m0, int64_t o0, int rows, int tiles) {
        blocks.push_back({block, m0, o0, rows, tiles, state_floats});
        state_floats += rows * tiles * kLanes;
      });
  std::vector<float> state(state_floats);
  const int64_t rows_per_range = RowsPerRange(g);
  ForEachChunk(g, x, n0, n1, [&](int64_t c0, int64_t c1, const float* xpad) {
    const float* dy = dy_all + c0 * g.ho * g.wo * g.o;
    std::fill(state.begin(), state.end(), 0.0f);
    // Every block over one row range, then the next range.
    for (int64_t n = 0; n < c1 - c0; ++n)
      for (int64_t y0 = 0; y0 < g.ho; y0 += rows_per_range) {
        const int64_t y1 = std::min(g.ho, y0 + rows_per_range);
        for (const Blk& blk : blocks)
          blk.fn(g, xpad, dy, offset.data() + blk.m0, n, y0, y1, blk.o0,
                 state.data() + blk.state);
      }
    // out += the chunk's sums: accumulator [r][t] -> dW row m0 + r, outputs o0 + t * kLanes.
    for (const Blk& blk : blocks)
      for (int64_t r = 0; r < blk.rows; ++r)
        for (int64_t t = 0; t < blk.tiles; ++t) {
          float* dst = out + (blk.m0 + r) * g.o + blk.o0 + t * kLanes;
          StoreVec(dst, LoadVec(dst) + LoadVec(state.data() + blk.state +
                                               (r * blk.tiles + t) * kLanes));
        }
    if (o_vec < g.o) Tail(g, xpad, dy, offset.data(), rows_total, 0, c1 - c0, o_vec, out);
  });
}

// The weight gradient with the vector lanes over input channels (C a multiple of
// kLanes): acc[r][v] += xpad[p + offset[v] ...] * dy[p, o0 + r] (broadcast), kOuts
// output channels times kVecs vectors of kLanes rows of dW. Each x vector is loaded once
// per pixel for kOuts FMAs and each dy value once for kVecs, where the blocks of Block
// above reload and re-broadcast through a dozen row offsets (spilled registers) and run
// one vector of 16 outputs. Every element still sums the same products in the same
// order (pixels of a chunk from zero, then into out), so the result is the same to the
// bit: the accumulators are kept in `state` between the row ranges of a chunk.
#if defined(__AVX512F__)
constexpr int kMaxOuts = 4, kMaxVecs = 6;  // 24 accumulators + 6 x vectors + 1 broadcast
#else
constexpr int kMaxOuts = 3, kMaxVecs = 3;
#endif

template <int kOuts, int kVecs>
void ChannelBlock(const Geometry& g, const float* xpad, const float* dy,
                  const int64_t* vec_offset, int64_t n, int64_t y0, int64_t y1, int64_t o0,
                  float* state) {
  Vec acc[kOuts][kVecs];
  for (int r = 0; r < kOuts; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v] = LoadVec(state + (r * kVecs + v) * kLanes);
  int64_t off[kVecs];
  for (int v = 0; v < kVecs; ++v) off[v] = vec_offset[v];
  for (int64_t y = y0; y < y1; ++y) {
    const float* x_row = xpad + (n * g.hp + y * g.sh) * g.wp * g.c;
    const float* dy_row = dy + (n * g.ho + y) * g.wo * g.o + o0;
    for (int64_t x = 0; x < g.wo; ++x) {
      const float* xp = x_row + x * g.sw * g.c;
      const float* dp = dy_row + x * g.o;
      Vec xv[kVecs];
      for (int v = 0; v < kVecs; ++v) xv[v] = LoadVecToRegister(xp + off[v]);
      for (int r = 0; r < kOuts; ++r) {
        const Vec b = dp[r] - Vec{};  // broadcast
        for (int v = 0; v < kVecs; ++v) acc[r][v] += xv[v] * b;
      }
    }
  }
  for (int r = 0; r < kOuts; ++r)
    for (int v = 0; v < kVecs; ++v) StoreVec(state + (r * kVecs + v) * kLanes, acc[r][v]);
}

template <int kOuts, int... kVecs>
constexpr auto MakeChannelRow(std::integer_sequence<int, kVecs...>) {
  return std::array{&ChannelBlock<kOuts, kVecs + 1>...};
}

template <int... kOuts>
constexpr auto MakeChannelTable(std::integer_sequence<int, kOuts...>) {
  return std::array{MakeChannelRow<kOuts + 1>(std::make_integer_sequence<int, kMaxVecs>{})...};
}

auto LookupChannelBlock(int outs, int vecs) {
  static constexpr auto kTable = MakeChannelTable(std::make_integer_sequence<int, kMaxOuts>{});
  return kTable[outs - 1][vecs - 1];
}

// The gradient over images [n0, n1), accumulated into out [M, O] (zeroed by the caller),
// with ChannelBlock: per chunk, output rows in ranges (RowsPerRange) of x and dy that stay
// in L1/L2 while every block passes over them.
void ChannelPart(const Geometry& g, const float* x, const float* dy_all, int64_t n0,
                 int64_t n1, float* out) {
  const int64_t vecs_total = g.kh * g.kw * g.c / kLanes;
  std::vector<int64_t> vec_offset(vecs_total);
  for (int64_t k = 0; k < vecs_total; ++k) {
    const int64_t tap = k * kLanes / g.c, c0 = k * kLanes % g.c;
    vec_offset[k] = ((tap / g.kw) * g.wp + tap % g.kw) * g.c + c0;
  }
  struct Blk { int outs, vecs; int64_t o0, k0; };
  std::vector<Blk> blocks;
  for (int64_t o0 = 0; o0 < g.o; o0 += kMaxOuts)
    for (int64_t k0 = 0; k0 < vecs_total; k0 += kMaxVecs)
      blocks.push_back({static_cast<int>(std::min<int64_t>(kMaxOuts, g.o - o0)),
                        static_cast<int>(std::min<int64_t>(kMaxVecs, vecs_total - k0)), o0, k0});
  constexpr int64_t kStateFloats = kMaxOuts * kMaxVecs * kLanes;
  std::vector<float> state(blocks.size() * kStateFloats);
  const int64_t rows_per_range = RowsPerRange(g);
  ForEachChunk(g, x, n0, n1, [&](int64_t c0, int64_t c1, const float* xpad) {
    const float* dy = dy_all + c0 * g.ho * g.wo * g.o;
    std::fill(state.begin(), state.end(), 0.0f);
    for (int64_t n = 0; n < c1 - c0; ++n)
      for (int64_t y0 = 0; y0 < g.ho; y0 += rows_per_range) {
        const int64_t y1 = std::min(g.ho, y0 + rows_per_range);
        for (size_t b = 0; b < blocks.size(); ++b) {
          const Blk& blk = blocks[b];
          LookupChannelBlock(blk.outs, blk.vecs)(g, xpad, dy, vec_offset.data() + blk.k0, n, y0,
                                                 y1, blk.o0, state.data() + b * kStateFloats);
        }
      }
    // out += the chunk's sums, accumulator [r][v] lane l -> dW row (k0 + v) * kLanes + l.
    for (size_t b = 0; b < blocks.size(); ++b) {
      const Blk& blk = blocks[b];
      const float* st = state.data() + b * kStateFloats;
      for (int r = 0; r < blk.outs; ++r)
        for (int v = 0; v < blk.vecs; ++v)
          for (int l = 0; l < kLanes; ++l)
            out[((blk.k0 + v) * kLanes + l) * g.o + blk.o0 + r] +=
                st[(r * blk.vecs + v) * kLanes + l];
    }
  });
}

ffi::Error WeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> lhs,
                      ffi::Buffer<ffi::F32> out_grad, ffi::ResultBuffer<ffi::F32> kernel_grad,
                      int64_t pad_top, int64_t pad_left, int64_t stride_h,
                      int64_t stride_w) {
  Geometry g;
  if (!MakeGeometry(lhs.dimensions(), kernel_grad->dimensions(), out_grad.dimensions(),
                    pad_top, pad_left, stride_h, stride_w, &g))
    return ffi::Error::InvalidArgument(
        "conv weight gradient: expected x [N, H, W, C], dy [N, H', W', O], dW [kh, kw, C, O]");
  const int64_t n = lhs.dimensions()[0], kh = g.kh, kw = g.kw, c = g.c, o = g.o;
  // Lanes over input channels where they fill whole vectors and the outputs are too few
  // for Block's tiles (measured: benchmarks/README.md); Block's row offsets otherwise.
  const bool by_channel = c % kLanes == 0 && o < 2 * kLanes;
  std::vector<int64_t> offset;
  if (!by_channel)
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j)
        for (int64_t k = 0; k < c; ++k) offset.push_back((i * g.wp + j) * c + k);
  const int64_t m = kh * kw * c;
  // A fixed number of parts (not the thread count): the same sums on every machine.
  const float *x = lhs.typed_data(), *dy = out_grad.typed_data();
  const std::vector<float> sums = SumOverImageParts(
      pool, n, 4, m * o, [&](int64_t n0, int64_t n1, float* partial) {
        if (by_channel)
          ChannelPart(g, x, dy, n0, n1, partial);
        else
          Part(g, x, dy, offset, n0, n1, partial);
      });
  std::copy(sums.begin(), sums.begin() + m * o, kernel_grad->typed_data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvConvWeightGrad, WeightGrad, ConvBinding());

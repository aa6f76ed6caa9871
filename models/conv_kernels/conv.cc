// Convolutions of NHWC inputs with HWIO kernels (float32, no dilation, one group) for
// XLA:CPU, as XLA FFI handlers: the forward pass and the weight gradient.
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
// each kernel row w[m, o] is loaded once and each of a block's pixels broadcast into it.
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
#include "parallel_for.h"

namespace ffi = xla::ffi;
using redconv::ParallelFor;

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;  // floats per vector register
constexpr int kRegisters = 28;  // of 32, for accumulators
#else
constexpr int kLanes = 8;
constexpr int kRegisters = 12;  // of 16 (AVX2, NEON pairs)
#endif
constexpr int kMaxTiles = 4;  // output channels per block: up to 4 vectors
constexpr int kMaxRows = 12;  // M rows per block
typedef float Vec __attribute__((vector_size(kLanes * 4)));

struct Geometry {
  int64_t h, w;       // input (per image)
  int64_t hp, wp, c;  // padded input (per image)
  int64_t ho, wo, o;  // output (per image)
  int64_t sh, sw;     // strides
  int64_t top, left;  // padding before the input
  int64_t kh, kw;     // kernel window
};

// acc[r][t] += xpad[p + offset[r]] * dy[p, o0 + t * kLanes ...] over the images [0, n1).
template <int kRows, int kTiles>
void Block(const Geometry& g, const float* xpad, const float* dy, const int64_t* offset,
           int64_t n0, int64_t n1, int64_t o0, float* out) {
  Vec acc[kRows][kTiles];
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < kTiles; ++t) acc[r][t] = Vec{};
  int64_t off[kRows];
  for (int r = 0; r < kRows; ++r) off[r] = offset[r];
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t y = 0; y < g.ho; ++y) {
      const float* x_row = xpad + (n * g.hp + y * g.sh) * g.wp * g.c;
      const float* dy_row = dy + (n * g.ho + y) * g.wo * g.o + o0;
      for (int64_t x = 0; x < g.wo; ++x) {
        const float* xp = x_row + x * g.sw * g.c;
        const float* dp = dy_row + x * g.o;
        Vec d[kTiles];
        for (int t = 0; t < kTiles; ++t) std::memcpy(&d[t], dp + t * kLanes, sizeof(Vec));
        for (int r = 0; r < kRows; ++r) {
          const Vec a = xp[off[r]] - Vec{};  // broadcast
          for (int t = 0; t < kTiles; ++t) acc[r][t] += a * d[t];
        }
      }
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < kTiles; ++t) {
      float* dst = out + r * g.o + o0 + t * kLanes;
      Vec sum;
      std::memcpy(&sum, dst, sizeof(Vec));
      sum += acc[r][t];
      std::memcpy(dst, &sum, sizeof(Vec));
    }
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

// The instantiations of a block kernel K for every (rows, tiles) up to (kMaxRows,
// kMaxTiles), picked at run time: the block sizes must be compile-time constants for
// the accumulators to live in registers.
template <typename K, int kTiles, int... kRows>
constexpr auto MakeRow(std::integer_sequence<int, kRows...>) {
  return std::array{K::template kFn<kRows + 1, kTiles>...};
}

template <typename K>
auto Lookup(int rows, int tiles) {
  static constexpr auto kRow1 = MakeRow<K, 1>(std::make_integer_sequence<int, kMaxRows>{});
  static constexpr auto kRow2 = MakeRow<K, 2>(std::make_integer_sequence<int, kMaxRows>{});
  static constexpr auto kRow3 = MakeRow<K, 3>(std::make_integer_sequence<int, kMaxRows>{});
  static constexpr auto kRow4 = MakeRow<K, 4>(std::make_integer_sequence<int, kMaxRows>{});
  switch (tiles) {
    case 1: return kRow1[rows - 1];
    case 2: return kRow2[rows - 1];
    case 3: return kRow3[rows - 1];
    default: return kRow4[rows - 1];
  }
}

// Calls fn(block, m0, o0) with the block kernel K for (rows, tiles) blocks covering the
// rows [0, m_total) (weight gradient: kh*kw*C inputs; forward: a row's pixels) times the
// whole vectors of the output channels [0, o), as many tiles as fit; returns the first
// output channel past them (the caller's scalar tail starts there).
template <typename K, typename F>
int64_t ForEachBlock(int64_t m_total, int64_t o, F fn) {
  int64_t o0 = 0;
  for (; o0 + kLanes <= o; o0 += kMaxTiles * kLanes) {
    const int tiles = static_cast<int>(std::min<int64_t>(kMaxTiles, (o - o0) / kLanes));
    const int max_rows = std::min(kMaxRows, std::max(1, kRegisters / tiles));
    for (int64_t m0 = 0; m0 < m_total; m0 += max_rows) {
      const int rows = static_cast<int>(std::min<int64_t>(max_rows, m_total - m0));
      fn(Lookup<K>(rows, tiles), m0, o0);
    }
    if (tiles < kMaxTiles) return o0 + tiles * kLanes;
  }
  return o0;
}

struct WeightGradKernel {
  template <int kRows, int kTiles> static constexpr auto kFn = &Block<kRows, kTiles>;
};

// Images [n0, n1) of x, padded with zeros to the windows the output reads, into xpad.
void Pad(const Geometry& g, const float* x, int64_t n0, int64_t n1, float* xpad) {
  std::memset(xpad, 0, (n1 - n0) * g.hp * g.wp * g.c * sizeof(float));
  const int64_t j0 = std::max<int64_t>(0, g.left), j1 = std::min(g.wp, g.w + g.left);
  if (j1 <= j0) return;
  for (int64_t b = n0; b < n1; ++b)
    for (int64_t i = 0; i < g.hp; ++i) {
      const int64_t yi = i - g.top;
      if (yi < 0 || yi >= g.h) continue;
      std::memcpy(xpad + (((b - n0) * g.hp + i) * g.wp + j0) * g.c,
                  x + ((b * g.h + yi) * g.w + (j0 - g.left)) * g.c, (j1 - j0) * g.c * 4);
    }
}

// Calls fn(c0, c1, xpad) for the images [n0, n1) in chunks whose padded input and
// output (~512 KiB) stay in L2 across the blocks; each chunk is padded here, by the
// thread that uses it, so the copy stays in its cache.
template <typename F>
void ForEachChunk(const Geometry& g, const float* x, int64_t n0, int64_t n1, F fn) {
  const int64_t image_bytes = (g.ho * g.wo * g.o + g.hp * g.wp * g.c) * 4;
  const int64_t chunk = std::max<int64_t>(1, (512 << 10) / image_bytes);
  std::vector<float> xpad(std::min(chunk, n1 - n0) * g.hp * g.wp * g.c);
  for (int64_t c0 = n0; c0 < n1; c0 += chunk) {
    const int64_t c1 = std::min(n1, c0 + chunk);
    Pad(g, x, c0, c1, xpad.data());
    fn(c0, c1, xpad.data());
  }
}

// The gradient over images [n0, n1), accumulated into out [M, O] (zeroed by the caller).
void Part(const Geometry& g, const float* x, const float* dy_all,
          const std::vector<int64_t>& offset, int64_t n0, int64_t n1, float* out) {
  const int64_t rows_total = static_cast<int64_t>(offset.size());
  ForEachChunk(g, x, n0, n1, [&](int64_t c0, int64_t c1, const float* xpad) {
    const float* dy = dy_all + c0 * g.ho * g.wo * g.o;
    const int64_t o0 = ForEachBlock<WeightGradKernel>(
        rows_total, g.o, [&](auto block, int64_t m0, int64_t o0) {
          block(g, xpad, dy, offset.data() + m0, 0, c1 - c0, o0, out + m0 * g.o);
        });
    if (o0 < g.o) Tail(g, xpad, dy, offset.data(), rows_total, 0, c1 - c0, o0, out);
  });
}

// y[p, o0 + t * kLanes ...] for the kPixels output pixels of one row starting at xp
// (their first window's top-left input, padded), pixel stride sw * C.
template <int kPixels, int kTiles>
void ForwardBlock(const Geometry& g, const float* xp, const float* w, int64_t o0,
                  float* out) {
  Vec acc[kPixels][kTiles];
  for (int p = 0; p < kPixels; ++p)
    for (int t = 0; t < kTiles; ++t) acc[p][t] = Vec{};
  const int64_t pixel_stride = g.sw * g.c;
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t j = 0; j < g.kw; ++j) {
      const float* x_tap = xp + (i * g.wp + j) * g.c;
      const float* w_tap = w + (i * g.kw + j) * g.c * g.o + o0;
      for (int64_t c = 0; c < g.c; ++c) {
        Vec wv[kTiles];
        for (int t = 0; t < kTiles; ++t)
          std::memcpy(&wv[t], w_tap + c * g.o + t * kLanes, sizeof(Vec));
        for (int p = 0; p < kPixels; ++p) {
          const Vec a = x_tap[p * pixel_stride + c] - Vec{};  // broadcast
          for (int t = 0; t < kTiles; ++t) acc[p][t] += a * wv[t];
        }
      }
    }
  for (int p = 0; p < kPixels; ++p)
    for (int t = 0; t < kTiles; ++t)
      std::memcpy(out + p * g.o + o0 + t * kLanes, &acc[p][t], sizeof(Vec));
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
            g.wo, g.o, [&](auto block, int64_t u, int64_t o0) {
              block(g, x_row + u * g.sw * g.c, w, o0, y_row + u * g.o);
            });
        if (o0 < g.o) ForwardTail(g, x_row, w, g.wo, o0, y_row);
      }
  });
}

// The geometry of x [N, H, W, C] * w [kh, kw, C, O] -> y [N, H', W', O] (the padded
// input spans exactly the windows y reads); false if the shapes do not fit together.
template <typename Dims>
bool MakeGeometry(Dims x, Dims w, Dims y, int64_t pad_top, int64_t pad_left,
                  int64_t stride_h, int64_t stride_w, Geometry* g) {
  if (x.size() != 4 || w.size() != 4 || y.size() != 4 || y[0] != x[0] || w[2] != x[3] ||
      y[3] != w[3] || pad_top < 0 || pad_left < 0 || stride_h < 1 || stride_w < 1)
    return false;
  *g = Geometry{x[1], x[2], (y[1] - 1) * stride_h + w[0], (y[2] - 1) * stride_w + w[1], x[3],
                y[1], y[2], y[3], stride_h, stride_w, pad_top, pad_left, w[0], w[1]};
  return true;
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
  std::vector<int64_t> offset;
  for (int64_t i = 0; i < kh; ++i)
    for (int64_t j = 0; j < kw; ++j)
      for (int64_t k = 0; k < c; ++k) offset.push_back((i * g.wp + j) * c + k);
  const int64_t m = kh * kw * c;
  // A fixed number of parts (not the thread count): the same sums on every machine.
  const int64_t parts = std::min<int64_t>(n, 4);
  std::vector<float> partial(parts * m * o, 0.0f);
  ParallelFor(pool, parts, [&](int64_t i) {
    Part(g, lhs.typed_data(), out_grad.typed_data(), offset, n * i / parts, n * (i + 1) / parts,
         partial.data() + i * m * o);
  });
  float* dw = kernel_grad->typed_data();
  for (int64_t k = 0; k < m * o; ++k) {
    float sum = partial[k];
    for (int64_t i = 1; i < parts; ++i) sum += partial[i * m * o + k];
    dw[k] = sum;
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> lhs, ffi::Buffer<ffi::F32> rhs,
                   ffi::ResultBuffer<ffi::F32> out, int64_t pad_top, int64_t pad_left,
                   int64_t stride_h, int64_t stride_w) {
  Geometry g;
  if (!MakeGeometry(lhs.dimensions(), rhs.dimensions(), out->dimensions(), pad_top, pad_left,
                    stride_h, stride_w, &g))
    return ffi::Error::InvalidArgument(
        "conv forward: expected x [N, H, W, C], w [kh, kw, C, O], y [N, H', W', O]");
  const int64_t n = lhs.dimensions()[0];
  const int64_t parts = std::min<int64_t>(n, 8);
  ParallelFor(pool, parts, [&](int64_t i) {
    ForwardPart(g, lhs.typed_data(), rhs.typed_data(), n * i / parts, n * (i + 1) / parts,
                out->typed_data());
  });
  return ffi::Error::Success();
}

}  // namespace

// Both handlers: two float32 operands and one result, the padding before the input and
// the strides; XLA's intra-op thread pool to run the parts on.
static auto Binding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_left")
      .Attr<int64_t>("stride_h")
      .Attr<int64_t>("stride_w");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvConvWeightGrad, WeightGrad, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvConvForward, Forward, Binding());

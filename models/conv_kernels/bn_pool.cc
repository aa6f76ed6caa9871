// BatchNorm + ReLU + 2x2 max-pooling (stride 2) as one layer's training passes, as XLA
// FFI handlers: the pooled output with each window's winner, and the backward pass's
// two per-channel sums and input gradient read from the pooled gradient.
//
// Why: the CNN's BatchNorm + ReLU (batch_norm.cc) wrote the full-size output that the
// pooling then read, and the pooling's gradient wrote a full-size tensor, three
// quarters zeros, that both backward passes read. Here the forward pass reads x and
// writes a quarter; the backward passes read the quarter-size gradient and winners.
// The arithmetic is batch_norm.cc's with relu and models/pooling.py's first maximum,
// term for term and in the same order (the sums too: norm_common.h), so the results
// are bit for bit those of the two layers apart.
#include <cstdint>

#include "xla/ffi/api/ffi.h"
#include "norm_common.h"

namespace ffi = xla::ffi;

namespace {

using namespace redconv::norm;  // NOLINT: the shared helpers, norm_common.h
using redconv::Vec;

// The winner's index, a float's or a vector's: int32, one per float.
using IVec = decltype(Vec{} > 0);
typedef int32_t UnalignedIVec __attribute__((vector_size(sizeof(IVec)), aligned(4), may_alias));
inline void LoadIndexTo(const int32_t* p, int32_t* v) { *v = *p; }
inline void LoadIndexTo(const int32_t* p, IVec* v) {
  *v = *reinterpret_cast<const UnalignedIVec*>(p);
}
inline void StoreIndex(int32_t* p, int32_t v) { *p = v; }
inline void StoreIndex(int32_t* p, const IVec& v) { *reinterpret_cast<UnalignedIVec*>(p) = v; }
template <typename T> struct IndexOf { using type = int32_t; };
template <> struct IndexOf<Vec> { using type = IVec; };
template <typename T> using Index = typename IndexOf<T>::type;
template <typename T> inline Index<T> LoadIndex(const int32_t* p) {
  Index<T> v;
  LoadIndexTo(p, &v);
  return v;
}
// keep ? a : b, elementwise for vectors.
template <typename M, typename V> inline V Pick(M keep, V a, V b) { return keep ? a : b; }

// x [B, H, W, C] and its pooled [B, H/2, W/2, C] (an odd last row or column is dropped).
struct PoolShape {
  int64_t batch, height, width, channels, pooled_height, pooled_width;
};

template <typename Dims>
bool GetPoolShape(Dims dims, PoolShape* s) {
  if (dims.size() != 4) return false;
  *s = {dims[0], dims[1], dims[2], dims[3], dims[1] / 2, dims[2] / 2};
  return s->pooled_height > 0 && s->pooled_width > 0;
}

int64_t PooledCount(const PoolShape& s) {
  return s.batch * s.pooled_height * s.pooled_width * s.channels;
}

// The pooled row of x's row p = (b, h, w), and the window position 2 * (h % 2) + w % 2
// it holds there; -1 for a dropped last row or column.
inline int64_t PooledRow(const PoolShape& s, int64_t p, int32_t* position) {
  const int64_t w = p % s.width, bh = p / s.width, h = bh % s.height, b = bh / s.height;
  if (h >= 2 * s.pooled_height || w >= 2 * s.pooled_width) return -1;
  *position = static_cast<int32_t>(2 * (h % 2) + w % 2);
  return (b * s.pooled_height + h / 2) * s.pooled_width + w / 2;
}

// pooled = the max over each 2x2 window of relu((x - mean) * mul + bias); winner = the
// window position 0..3 (row-major) of its first maximum, or -1 where that maximum is
// not positive (the ReLU passed no gradient there).
ffi::Error ApplyPool(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> mean,
                     ffi::Buffer<ffi::F32> mul, ffi::Buffer<ffi::F32> bias,
                     ffi::ResultBuffer<ffi::F32> pooled, ffi::ResultBuffer<ffi::S32> winner) {
  PoolShape s;
  if (!GetPoolShape(x.dimensions(), &s) || mean.element_count() != s.channels ||
      mul.element_count() != s.channels || bias.element_count() != s.channels ||
      pooled->element_count() != PooledCount(s) || winner->element_count() != PooledCount(s))
    return ffi::Error::InvalidArgument(
        "batch-norm + pooling output: expected x [B, H, W, C] (H, W >= 2), mean, mul, bias "
        "[C], pooled and winner [B, H/2, W/2, C]");
  const int64_t C = s.channels;
  const float* xs = x.typed_data();
  const float* m = mean.typed_data();
  const float* a = mul.typed_data();
  const float* b = bias.typed_data();
  float* out = pooled->typed_data();
  int32_t* win = winner->typed_data();
  // Window positions (0, 1), (1, 0), (1, 1) as row offsets from (0, 0).
  const int64_t offsets[3] = {C, s.width * C, (s.width + 1) * C};
  ForRows(pool, s.batch * s.pooled_height, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b_index = r / s.pooled_height, i = r % s.pooled_height;
      for (int64_t j = 0; j < s.pooled_width; ++j) {
        const int64_t k0 = ((b_index * s.height + 2 * i) * s.width + 2 * j) * C;
        const int64_t q0 = (r * s.pooled_width + j) * C;
        ForChannels(C, [&](auto t, int64_t c) {
          using T = decltype(t);
          using I = Index<T>;
          // batch_norm.cc's Apply<false, true>, at each of the four positions.
          auto value = [&](int64_t k) {
            const T v = Normalized<T>(xs + k, m, a, b, c);
            return Select(v > 0.0f, v);
          };
          T best = value(k0);
          I index = I{} + 0;
          for (int32_t position = 1; position <= 3; ++position) {
            const T candidate = value(k0 + offsets[position - 1]);
            // Strictly greater: on ties the earlier position keeps the gradient.
            const auto better = candidate > best;
            best = Pick(better, candidate, best);
            index = Pick(better, I{} + position, index);
          }
          StoreFrom(out + q0 + c, best);
          StoreIndex(win + q0 + c, Pick(best > 0.0f, index, I{} - 1));
        });
      }
    }
  });
  return ffi::Error::Success();
}

// row p -> its g at channels c.. (norm_common.h's passes): the pooled gradient where p
// holds its window's winner, else 0 (batch_norm.cc's masked g after the pooling's
// gradient); 0 in a dropped last row or column.
inline auto WinnerRows(const PoolShape& s, const float* pooled_grad, const int32_t* win) {
  return [=](int64_t p) {
    int32_t position = 0;
    const int64_t q = PooledRow(s, p, &position);
    const int64_t q0 = q * s.channels;
    return [=](auto t, int64_t c) {
      using T = decltype(t);
      if (q < 0) return T{};
      return Select(LoadIndex<T>(win + q0 + c) == position, Load<T>(pooled_grad + q0 + c));
    };
  };
}

template <typename Dims>
bool GradShapes(Dims x, int64_t grad_count, int64_t winner_count, PoolShape* s) {
  return GetPoolShape(x, s) && grad_count == PooledCount(*s) && winner_count == PooledCount(*s);
}

// sum_g[c] = sum of g, sum_gx[c] = sum of g * (x - mean) over x's rows.
ffi::Error PoolGradSums(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> pooled_grad,
                        ffi::Buffer<ffi::S32> winner, ffi::Buffer<ffi::F32> x,
                        ffi::Buffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> sum_g,
                        ffi::ResultBuffer<ffi::F32> sum_gx) {
  PoolShape s;
  if (!GradShapes(x.dimensions(), pooled_grad.element_count(), winner.element_count(), &s) ||
      mean.element_count() != s.channels || sum_g->element_count() != s.channels ||
      sum_gx->element_count() != s.channels)
    return ffi::Error::InvalidArgument(
        "batch-norm + pooling gradient sums: expected pooled_grad and winner "
        "[B, H/2, W/2, C] for x [B, H, W, C], mean [C]");
  GradSumsPass(pool, s.batch * s.height * s.width, s.channels, x.typed_data(),
               mean.typed_data(), WinnerRows(s, pooled_grad.typed_data(), winner.typed_data()),
               sum_g->typed_data(), sum_gx->typed_data());
  return ffi::Error::Success();
}

// dx = a * g + k * (x - mean) + d per channel.
ffi::Error PoolGradInput(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> pooled_grad,
                         ffi::Buffer<ffi::S32> winner, ffi::Buffer<ffi::F32> x,
                         ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> a,
                         ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> d,
                         ffi::ResultBuffer<ffi::F32> dx) {
  PoolShape s;
  if (!GradShapes(x.dimensions(), pooled_grad.element_count(), winner.element_count(), &s) ||
      mean.element_count() != s.channels || a.element_count() != s.channels ||
      k.element_count() != s.channels || d.element_count() != s.channels ||
      dx->element_count() != x.element_count())
    return ffi::Error::InvalidArgument(
        "batch-norm + pooling input gradient: expected pooled_grad and winner "
        "[B, H/2, W/2, C] for x and dx [B, H, W, C], mean, a, k, d [C]");
  GradInputPass<false>(pool, s.batch * s.height * s.width, s.channels, x.typed_data(),
                       mean.typed_data(), a.typed_data(), k.typed_data(), d.typed_data(),
                       WinnerRows(s, pooled_grad.typed_data(), winner.typed_data()),
                       dx->typed_data(), dx->typed_data());
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using S32 = ffi::Buffer<ffi::S32>;

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvBnApplyPool, ApplyPool,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Ret<F32>().Ret<S32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvBnPoolGradSums, PoolGradSums,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<S32>()
                                  .Arg<F32>().Arg<F32>().Ret<F32>().Ret<F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvBnPoolGradInput, PoolGradInput,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<S32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>());

// BatchNorm's training-mode passes over an activation x [P, C] (channels last, P = every
// other axis) for XLA:CPU, as XLA FFI handlers: the batch statistics, the normalised
// output (with a block's residual add and the ReLU), and the backward pass's two
// per-channel sums and elementwise input gradient.
//
// XLA:CPU ran these as separate fusions at about half the memory bandwidth two threads
// get (benchmarks/README.md): here each is one pass over its tensors, split into a
// fixed number of row ranges that XLA's intra-op thread pool runs (norm_common.h: the
// sums' order, which does not depend on the threads).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "norm_common.h"

namespace ffi = xla::ffi;

namespace {

using namespace redconv::norm;  // NOLINT: the shared helpers, norm_common.h

// mean[c] and var[c] = max(0, E[x^2] - E[x]^2) over the rows of x [P, C].
ffi::Error Stats(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> mean,
                 ffi::ResultBuffer<ffi::F32> var) {
  int64_t rows, channels;
  if (!RowsAndChannels(x.dimensions(), &rows, &channels) || rows == 0 ||
      mean->element_count() != channels || var->element_count() != channels)
    return ffi::Error::InvalidArgument(
        "batch-norm statistics: expected x [..., C], mean [C], var [C]");
  const float* xs = x.typed_data();
  std::vector<double> sum, sum_sq;
  ChannelSums(pool, rows, channels, [&](int64_t p, float* s1, float* s2) {
    const float* xr = xs + p * channels;
    ForChannels(channels, [&](auto t, int64_t c) {
      using T = decltype(t);
      const T v = Load<T>(xr + c);
      StoreFrom(s1 + c, Load<T>(s1 + c) + v);
      StoreFrom(s2 + c, Load<T>(s2 + c) + v * v);
    });
  }, &sum, &sum_sq);
  for (int64_t c = 0; c < channels; ++c) {
    const double m = sum[c] / rows;
    mean->typed_data()[c] = static_cast<float>(m);
    var->typed_data()[c] = static_cast<float>(std::max(0.0, sum_sq[c] / rows - m * m));
  }
  return ffi::Error::Success();
}

// y = act((x - mean) * mul + bias [+ residual]), act the ReLU if relu.
template <bool kResidual, bool kRelu>
ffi::Error Apply(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> mean,
                 ffi::Buffer<ffi::F32> mul, ffi::Buffer<ffi::F32> bias,
                 ffi::Buffer<ffi::F32> residual, ffi::ResultBuffer<ffi::F32> y) {
  int64_t rows, channels;
  if (!RowsAndChannels(x.dimensions(), &rows, &channels) || mean.element_count() != channels ||
      mul.element_count() != channels || bias.element_count() != channels ||
      y->element_count() != x.element_count() ||
      (kResidual && residual.element_count() != x.element_count()))
    return ffi::Error::InvalidArgument(
        "batch-norm output: expected x [..., C], mean, mul, bias [C], residual and y like x");
  const float* xs = x.typed_data();
  const float* rs = residual.typed_data();
  const float* m = mean.typed_data();
  const float* a = mul.typed_data();
  const float* b = bias.typed_data();
  float* ys = y->typed_data();
  ForRows(pool, rows, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t k0 = p * channels;
      ForChannels(channels, [&](auto t, int64_t c) {
        using T = decltype(t);
        T v = Normalized<T>(xs + k0, m, a, b, c);
        if (kResidual) v += Load<T>(rs + k0 + c);
        StoreFrom(ys + k0 + c, kRelu ? Select(v > 0.0f, v) : v);
      });
    }
  });
  return ffi::Error::Success();
}

// The output gradient through the ReLU (g = dy where y > 0, else 0; g = dy without it).
template <bool kRelu, typename T>
inline T Masked(const float* dy, const float* y, int64_t k) {
  return kRelu ? Select(Load<T>(y + k) > 0.0f, Load<T>(dy + k)) : Load<T>(dy + k);
}

// row p -> its g at channels c.. (norm_common.h's passes).
template <bool kRelu>
auto MaskedRows(const float* dy, const float* y, int64_t channels) {
  return [=](int64_t p) {
    const int64_t k0 = p * channels;
    return [=](auto t, int64_t c) { return Masked<kRelu, decltype(t)>(dy, y, k0 + c); };
  };
}

// sum_g[c] = sum of g, sum_gx[c] = sum of g * (x - mean) over the rows.
template <bool kRelu>
ffi::Error GradSums(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> x,
                    ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> mean,
                    ffi::ResultBuffer<ffi::F32> sum_g, ffi::ResultBuffer<ffi::F32> sum_gx) {
  int64_t rows, channels;
  if (!RowsAndChannels(x.dimensions(), &rows, &channels) ||
      dy.element_count() != x.element_count() ||
      (kRelu && y.element_count() != x.element_count()) || mean.element_count() != channels ||
      sum_g->element_count() != channels || sum_gx->element_count() != channels)
    return ffi::Error::InvalidArgument(
        "batch-norm gradient sums: expected dy, x, y [..., C] alike, mean [C]");
  GradSumsPass(pool, rows, channels, x.typed_data(), mean.typed_data(),
               MaskedRows<kRelu>(dy.typed_data(), y.typed_data(), channels),
               sum_g->typed_data(), sum_gx->typed_data());
  return ffi::Error::Success();
}

// dx = a * g + k * (x - mean) + d per channel; with kResidual also g (the residual's
// gradient).
template <bool kResidual, bool kRelu>
ffi::Error GradInput(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> x,
                     ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> mean,
                     ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> d,
                     ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> g_out) {
  int64_t rows, channels;
  if (!RowsAndChannels(x.dimensions(), &rows, &channels) ||
      dy.element_count() != x.element_count() ||
      (kRelu && y.element_count() != x.element_count()) || mean.element_count() != channels ||
      a.element_count() != channels || k.element_count() != channels ||
      d.element_count() != channels || dx->element_count() != x.element_count() ||
      (kResidual && g_out->element_count() != x.element_count()))
    return ffi::Error::InvalidArgument(
        "batch-norm input gradient: expected dy, x, y, dx [..., C] alike, mean, a, k, d [C]");
  GradInputPass<kResidual>(pool, rows, channels, x.typed_data(), mean.typed_data(),
                           a.typed_data(), k.typed_data(), d.typed_data(),
                           MaskedRows<kRelu>(dy.typed_data(), y.typed_data(), channels),
                           dx->typed_data(), g_out->typed_data());
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

// The handlers: `relu` (0 or 1) picks a compiled variant, so no loop tests it.
ffi::Error ApplyHandler(ffi::ThreadPool pool, F32 x, F32 mean, F32 mul, F32 bias, F32Out y,
                        int64_t relu) {
  return relu ? Apply<false, true>(pool, x, mean, mul, bias, x, y)
              : Apply<false, false>(pool, x, mean, mul, bias, x, y);
}

ffi::Error ApplyResidualHandler(ffi::ThreadPool pool, F32 x, F32 mean, F32 mul, F32 bias,
                                F32 residual, F32Out y, int64_t relu) {
  return relu ? Apply<true, true>(pool, x, mean, mul, bias, residual, y)
              : Apply<true, false>(pool, x, mean, mul, bias, residual, y);
}

ffi::Error GradSumsHandler(ffi::ThreadPool pool, F32 dy, F32 x, F32 y, F32 mean, F32Out sum_g,
                           F32Out sum_gx, int64_t relu) {
  return relu ? GradSums<true>(pool, dy, x, y, mean, sum_g, sum_gx)
              : GradSums<false>(pool, dy, x, y, mean, sum_g, sum_gx);
}

ffi::Error GradInputHandler(ffi::ThreadPool pool, F32 dy, F32 x, F32 y, F32 mean, F32 a, F32 k,
                            F32 d, F32Out dx, int64_t relu) {
  return relu ? GradInput<false, true>(pool, dy, x, y, mean, a, k, d, dx, dx)
              : GradInput<false, false>(pool, dy, x, y, mean, a, k, d, dx, dx);
}

ffi::Error GradInputResidualHandler(ffi::ThreadPool pool, F32 dy, F32 x, F32 y, F32 mean,
                                    F32 a, F32 k, F32 d, F32Out dx, F32Out g, int64_t relu) {
  return relu ? GradInput<true, true>(pool, dy, x, y, mean, a, k, d, dx, g)
              : GradInput<true, false>(pool, dy, x, y, mean, a, k, d, dx, g);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvBnStats, Stats,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvBnApply, ApplyHandler,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Ret<F32>().Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvBnApplyResidual, ApplyResidualHandler,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>()
                                  .Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvBnGradSums, GradSumsHandler,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvBnGradInput, GradInputHandler,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Attr<int64_t>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(RedconvBnGradInputResidual, GradInputResidualHandler,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Attr<int64_t>("relu"));

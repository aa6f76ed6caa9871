// What BatchNorm's compiled passes share (batch_norm.cc, bn_pool.cc): one generic body
// for a row's whole vectors and its scalar tail, the [P, C] view of a buffer,
// per-channel sums that do not depend on the thread count, and the normalisation and
// backward passes' arithmetic.
//
// Sums accumulate in float over blocks of kBlockRows rows (vectorised across channels),
// then in double, then across a fixed number of row ranges in range order: the result
// does not depend on which thread ran what, and has less rounding than a float reduction.
#ifndef REDCONV_NORM_COMMON_H_
#define REDCONV_NORM_COMMON_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "parallel_for.h"
#include "vector.h"

namespace redconv {
namespace norm {

namespace ffi = xla::ffi;

constexpr int64_t kParts = 8;       // row ranges (fixed: the same sums on every machine)
constexpr int64_t kBlockRows = 64;  // rows summed in float before the double accumulators
constexpr int64_t kRowSets = 4;     // block accumulators rows rotate over (no store-to-load
                                    // chain from one row to the next when C is small)

// Loads and stores of a float or a vector of kLanes floats, so that one generic body
// serves a row's whole vectors and its scalar tail (C not a multiple of kLanes).
inline void LoadTo(const float* p, float* v) { *v = *p; }
inline void LoadTo(const float* p, Vec* v) { *v = LoadVec(p); }
inline void StoreFrom(float* p, float v) { *p = v; }
inline void StoreFrom(float* p, const Vec& v) { StoreVec(p, v); }
template <typename T> inline T Load(const float* p) { T v; LoadTo(p, &v); return v; }
inline float Select(bool keep, float v) { return keep ? v : 0.0f; }
inline Vec Select(decltype(Vec{} > 0) keep, const Vec& v) { return keep ? v : Vec{}; }

// body(T{}, c) for the channels of one row: whole vectors (T = Vec), then the rest
// one float at a time (T = float).
template <typename F>
inline void ForChannels(int64_t channels, F body) {
  int64_t c = 0;
  for (; c + kLanes <= channels; c += kLanes) body(Vec{}, c);
  for (; c < channels; ++c) body(0.0f, c);
}

// Rows [p0, p1) of part i of P rows.
inline int64_t PartStart(int64_t rows, int64_t parts, int64_t i) { return rows * i / parts; }

// The [P, C] shape of a buffer whose last axis is C; false if it has no axes.
template <typename Dims>
bool RowsAndChannels(Dims dims, int64_t* rows, int64_t* channels) {
  if (dims.size() < 1) return false;
  *channels = dims[dims.size() - 1];
  *rows = 1;
  for (size_t k = 0; k + 1 < dims.size(); ++k) *rows *= dims[k];
  return true;
}

// Two per-channel sums over the rows: terms(p, s1, s2) adds row p's terms into the float
// accumulators s1[C], s2[C] of its block (rows rotate over kRowSets of them); blocks
// are added into each part's double sums, the parts in order into out1 / out2.
template <typename F>
void ChannelSums(ffi::ThreadPool& pool, int64_t rows, int64_t channels, F terms,
                 std::vector<double>* out1, std::vector<double>* out2) {
  const int64_t parts = std::max<int64_t>(1, std::min(kParts, rows));
  std::vector<double> partial(2 * parts * channels, 0.0);
  ParallelFor(pool, parts, [&](int64_t i) {
    double* sum1 = partial.data() + 2 * i * channels;
    double* sum2 = sum1 + channels;
    std::vector<float> block1(kRowSets * channels), block2(kRowSets * channels);
    const int64_t p1 = PartStart(rows, parts, i + 1);
    for (int64_t b0 = PartStart(rows, parts, i); b0 < p1; b0 += kBlockRows) {
      std::fill(block1.begin(), block1.end(), 0.0f);
      std::fill(block2.begin(), block2.end(), 0.0f);
      const int64_t b1 = std::min(p1, b0 + kBlockRows);
      for (int64_t p = b0; p < b1; ++p) {
        const int64_t set = (p - b0) % kRowSets;
        terms(p, block1.data() + set * channels, block2.data() + set * channels);
      }
      for (int64_t set = 0; set < kRowSets; ++set)
        for (int64_t c = 0; c < channels; ++c) {
          sum1[c] += block1[set * channels + c];
          sum2[c] += block2[set * channels + c];
        }
    }
  });
  out1->assign(channels, 0.0);
  out2->assign(channels, 0.0);
  for (int64_t i = 0; i < parts; ++i)
    for (int64_t c = 0; c < channels; ++c) {
      (*out1)[c] += partial[2 * i * channels + c];
      (*out2)[c] += partial[(2 * i + 1) * channels + c];
    }
}

// Runs fn(p0, p1) for the parts [p0, p1) of [0, rows) on the pool.
template <typename F>
void ForRows(ffi::ThreadPool& pool, int64_t rows, F fn) {
  const int64_t parts = std::max<int64_t>(1, std::min(kParts, rows));
  ParallelFor(pool, parts, [&](int64_t i) {
    fn(PartStart(rows, parts, i), PartStart(rows, parts, i + 1));
  });
}

// (x - mean) * mul + bias at channels c.. of a row (x, mean, mul, bias at channel 0):
// BatchNorm's output before a residual add or the ReLU, one expression for every pass
// that computes it (batch_norm.cc, bn_pool.cc), so they round alike.
template <typename T>
inline T Normalized(const float* x, const float* mean, const float* mul, const float* bias,
                    int64_t c) {
  return (Load<T>(x + c) - Load<T>(mean + c)) * Load<T>(mul + c) + Load<T>(bias + c);
}

// BatchNorm's two backward passes over the rows of x [P, C] for an output gradient g
// that each layer finds its own way: row_grad(p) returns row p's g as a function
// (T{}, c) -> T of channels c.. (batch_norm.cc: dy through the ReLU's mask; bn_pool.cc:
// the pooled gradient at each window's winner). One body each, so the layers' sums
// and dx are the same arithmetic in the same order.

// sum_g[c] = sum of g, sum_gx[c] = sum of g * (x - mean) over the rows.
template <typename RowGrad>
void GradSumsPass(ffi::ThreadPool& pool, int64_t rows, int64_t channels, const float* xs,
                  const float* m, RowGrad row_grad, float* sum_g, float* sum_gx) {
  std::vector<double> s1, s2;
  ChannelSums(pool, rows, channels, [&](int64_t p, float* a1, float* a2) {
    const int64_t k0 = p * channels;
    const auto g_at = row_grad(p);
    ForChannels(channels, [&](auto t, int64_t c) {
      using T = decltype(t);
      const T g = g_at(t, c);
      StoreFrom(a1 + c, Load<T>(a1 + c) + g);
      StoreFrom(a2 + c, Load<T>(a2 + c) + g * (Load<T>(xs + k0 + c) - Load<T>(m + c)));
    });
  }, &s1, &s2);
  for (int64_t c = 0; c < channels; ++c) {
    sum_g[c] = static_cast<float>(s1[c]);
    sum_gx[c] = static_cast<float>(s2[c]);
  }
}

// dx = a * g + k * (x - mean) + d per channel over the rows; with kStoreG also g into
// gs (a residual's gradient).
template <bool kStoreG, typename RowGrad>
void GradInputPass(ffi::ThreadPool& pool, int64_t rows, int64_t channels, const float* xs,
                   const float* ms, const float* as, const float* ks, const float* ds,
                   RowGrad row_grad, float* dxs, float* gs) {
  ForRows(pool, rows, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t k0 = p * channels;
      const auto g_at = row_grad(p);
      ForChannels(channels, [&](auto t, int64_t c) {
        using T = decltype(t);
        const T g = g_at(t, c);
        StoreFrom(dxs + k0 + c, Load<T>(as + c) * g +
                                    Load<T>(ks + c) * (Load<T>(xs + k0 + c) - Load<T>(ms + c)) +
                                    Load<T>(ds + c));
        if (kStoreG) StoreFrom(gs + k0 + c, g);
      });
    }
  });
}

}  // namespace norm
}  // namespace redconv

#endif  // REDCONV_NORM_COMMON_H_

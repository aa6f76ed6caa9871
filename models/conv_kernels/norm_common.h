// What BatchNorm's compiled passes share (batch_norm.cc, bn_pool.cc): one generic body
// for a row's whole vectors and its scalar tail, the [P, C] view of a buffer, and
// per-channel sums that do not depend on the thread count.
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

}  // namespace norm
}  // namespace redconv

#endif  // REDCONV_NORM_COMMON_H_

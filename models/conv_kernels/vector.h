// The vector register every compiled kernel here computes with: kLanes floats.
#ifndef REDCONV_VECTOR_H_
#define REDCONV_VECTOR_H_

namespace redconv {

#if defined(__AVX512F__)
constexpr int kLanes = 16;  // floats per vector register
#else
constexpr int kLanes = 8;  // AVX2 (NEON pairs)
#endif
typedef float Vec __attribute__((vector_size(kLanes * 4)));
// The same vector at any float's address (and allowed to alias floats).
typedef float UnalignedVec __attribute__((vector_size(kLanes * 4), aligned(4), may_alias));

// Vector loads and stores as plain assignments, not std::memcpy: GCC turned a block's
// memcpy loads of 3 or 4 consecutive vectors into one copy through the stack, and then
// kept the block's accumulators on the stack too (AVX2: ~4x slower).
inline Vec LoadVec(const float* p) { return *reinterpret_cast<const UnalignedVec*>(p); }
inline void StoreVec(float* p, Vec v) { *reinterpret_cast<UnalignedVec*>(p) = v; }

// A block's operand vector, loaded once into a register for all the multiply-adds that
// use it. With a plain load, GCC folded it into each multiply-add's memory operand in the
// blocks of 4 rows or fewer (8 accumulators), loading the same vector once per row: on
// an AVX2 AMD EPYC those blocks ran at half speed (47 against 94 GFLOP/s for 6 rows).
// The empty asm says the value lives in a register ("v": any vector register, the 32 of
// AVX-512 included), which nothing can fold away. Without AVX (SSE or NEON: a pair of
// registers holds the vector) a plain load.
inline Vec LoadVecToRegister(const float* p) {
  Vec v = LoadVec(p);
#if defined(__AVX__)
  asm("" : "+v"(v));
#endif
  return v;
}

}  // namespace redconv

#endif  // REDCONV_VECTOR_H_

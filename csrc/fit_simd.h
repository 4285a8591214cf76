// 8-lane float vectors for the fitting kernels (fit_kernels.h is written once against this
// interface and compiled for each):
//   VecAvx2  AVX2 + FMA intrinsics (its functions are compiled for those targets: call them
//            only from code compiled likewise, on a CPU that has both)
//   VecBase  portable C++ for any CPU (no FMA: fma(a, b, c) is a*b + c, two roundings)
// Masks are vectors whose lanes are all ones or all zeros (bitwise), so that and_mask gives
// exact zeros even where the other operand is not finite.
#pragma once

#include <cstdint>
#include <cstring>

#include "isa.h"

#if GSI_HAVE_AVX2
#include <immintrin.h>
#endif

namespace gsi {

struct VecBase {
    float v[8];

    static VecBase zero() { return set1(0.0f); }
    static VecBase set1(float x) {
        VecBase r;
        for (int i = 0; i < 8; ++i) r.v[i] = x;
        return r;
    }
    static VecBase iota(float base) {  // base + 0, ..., base + 7 (exact for |base| < 2^23)
        VecBase r;
        for (int i = 0; i < 8; ++i) r.v[i] = base + (float)i;
        return r;
    }
    static VecBase load(const float* p) {
        VecBase r;
        std::memcpy(r.v, p, sizeof(r.v));
        return r;
    }
    void store(float* p) const { std::memcpy(p, v, sizeof(v)); }
    friend VecBase operator+(VecBase a, VecBase b) {
        for (int i = 0; i < 8; ++i) a.v[i] += b.v[i];
        return a;
    }
    friend VecBase operator-(VecBase a, VecBase b) {
        for (int i = 0; i < 8; ++i) a.v[i] -= b.v[i];
        return a;
    }
    friend VecBase operator*(VecBase a, VecBase b) {
        for (int i = 0; i < 8; ++i) a.v[i] *= b.v[i];
        return a;
    }
    static VecBase fma(VecBase a, VecBase b, VecBase c) { return a * b + c; }
    static VecBase fnma(VecBase a, VecBase b, VecBase c) { return c - a * b; }  // c - a*b
    static VecBase max(VecBase a, VecBase b) {  // b where a is NaN
        for (int i = 0; i < 8; ++i) a.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i];
        return a;
    }
    static VecBase le_mask(VecBase a, VecBase b) {  // a <= b (false for NaN)
        VecBase r;
        for (int i = 0; i < 8; ++i) {
            const uint32_t m = a.v[i] <= b.v[i] ? 0xffffffffu : 0u;
            std::memcpy(&r.v[i], &m, 4);
        }
        return r;
    }
    static VecBase and_mask(VecBase mask, VecBase a) {
        for (int i = 0; i < 8; ++i) {
            uint32_t m, x;
            std::memcpy(&m, &mask.v[i], 4);
            std::memcpy(&x, &a.v[i], 4);
            x &= m;
            std::memcpy(&a.v[i], &x, 4);
        }
        return a;
    }
    static VecBase round(VecBase a) {  // to nearest (even), for |a| < 2^22
        for (int i = 0; i < 8; ++i) a.v[i] = (a.v[i] + 12582912.0f) - 12582912.0f;
        return a;
    }
    // p * 2^n for n integral in [-126, 127] and p in [0.5, 2): the exponent bits moved.
    static VecBase scale2(VecBase p, VecBase n) {
        for (int i = 0; i < 8; ++i) {
            int32_t x;
            std::memcpy(&x, &p.v[i], 4);
            x += (int32_t)n.v[i] * (1 << 23);
            std::memcpy(&p.v[i], &x, 4);
        }
        return p;
    }
    // Bitwise: the lanes' bits shifted left as integers, and, xor; select_sign: b where
    // the sign bit of mask is set, else a.
    static VecBase shl(VecBase a, int s) {
        for (int i = 0; i < 8; ++i) {
            uint32_t x;
            std::memcpy(&x, &a.v[i], 4);
            x <<= s;
            std::memcpy(&a.v[i], &x, 4);
        }
        return a;
    }
    static VecBase bits_and(VecBase a, VecBase b) { return bitwise(a, b, false); }
    static VecBase bits_xor(VecBase a, VecBase b) { return bitwise(a, b, true); }
    static VecBase select_sign(VecBase mask, VecBase a, VecBase b) {
        for (int i = 0; i < 8; ++i) {
            uint32_t m;
            std::memcpy(&m, &mask.v[i], 4);
            if (m >> 31) a.v[i] = b.v[i];
        }
        return a;
    }
    static VecBase bitwise(VecBase a, VecBase b, bool exclusive) {
        for (int i = 0; i < 8; ++i) {
            uint32_t x, y;
            std::memcpy(&x, &a.v[i], 4);
            std::memcpy(&y, &b.v[i], 4);
            x = exclusive ? x ^ y : x & y;
            std::memcpy(&a.v[i], &x, 4);
        }
        return a;
    }
    float lane(int i) const { return v[i]; }
    float hsum() const {  // ((0+4)+(2+6)) + ((1+5)+(3+7)), as VecAvx2::hsum
        const float s0 = v[0] + v[4], s1 = v[1] + v[5], s2 = v[2] + v[6], s3 = v[3] + v[7];
        return (s0 + s2) + (s1 + s3);
    }
};

#if GSI_HAVE_AVX2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
// Used only by code compiled for AVX2 and FMA, and only where the CPU has both.
struct VecAvx2 {
    __m256 v;

    static VecAvx2 make(__m256 x) {
        VecAvx2 r;
        r.v = x;
        return r;
    }
    static VecAvx2 zero() { return make(_mm256_setzero_ps()); }
    static VecAvx2 set1(float x) { return make(_mm256_set1_ps(x)); }
    static VecAvx2 iota(float base) {
        return make(_mm256_add_ps(_mm256_set1_ps(base), _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7)));
    }
    static VecAvx2 load(const float* p) { return make(_mm256_loadu_ps(p)); }
    void store(float* p) const { _mm256_storeu_ps(p, v); }
    static VecAvx2 fma(VecAvx2 a, VecAvx2 b, VecAvx2 c) {
        return make(_mm256_fmadd_ps(a.v, b.v, c.v));
    }
    static VecAvx2 fnma(VecAvx2 a, VecAvx2 b, VecAvx2 c) {
        return make(_mm256_fnmadd_ps(a.v, b.v, c.v));
    }
    static VecAvx2 shl(VecAvx2 a, int s) {
        return make(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(a.v), s)));
    }
    static VecAvx2 bits_and(VecAvx2 a, VecAvx2 b) { return make(_mm256_and_ps(a.v, b.v)); }
    static VecAvx2 bits_xor(VecAvx2 a, VecAvx2 b) { return make(_mm256_xor_ps(a.v, b.v)); }
    static VecAvx2 select_sign(VecAvx2 mask, VecAvx2 a, VecAvx2 b) {
        return make(_mm256_blendv_ps(a.v, b.v, mask.v));
    }
    float lane(int i) const {
        alignas(32) float t[8];
        _mm256_store_ps(t, v);
        return t[i];
    }
    static VecAvx2 max(VecAvx2 a, VecAvx2 b) {  // b where a is NaN
        return make(_mm256_max_ps(a.v, b.v));
    }
    static VecAvx2 le_mask(VecAvx2 a, VecAvx2 b) {
        return make(_mm256_cmp_ps(a.v, b.v, _CMP_LE_OQ));
    }
    static VecAvx2 and_mask(VecAvx2 m, VecAvx2 a) { return make(_mm256_and_ps(m.v, a.v)); }
    static VecAvx2 round(VecAvx2 a) {
        return make(_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    static VecAvx2 scale2(VecAvx2 p, VecAvx2 n) {
        const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n.v), 23);
        return make(_mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p.v), e)));
    }
    float hsum() const {
        const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
        return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
    }
};
// (At namespace scope: GCC does not apply the target pragma to friends defined in a class.)
inline VecAvx2 operator+(VecAvx2 a, VecAvx2 b) { return VecAvx2::make(_mm256_add_ps(a.v, b.v)); }
inline VecAvx2 operator-(VecAvx2 a, VecAvx2 b) { return VecAvx2::make(_mm256_sub_ps(a.v, b.v)); }
inline VecAvx2 operator*(VecAvx2 a, VecAvx2 b) { return VecAvx2::make(_mm256_mul_ps(a.v, b.v)); }
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

}  // namespace gsi

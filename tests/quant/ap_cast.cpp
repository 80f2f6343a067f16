// Reference for the bit-exactness tests of calohls.quant.fixed: prints the bits that the Xilinx
// arbitrary-precision types hold after assignment from doubles.
//
// Build: g++ -O1 -std=c++14 -I<ap_types> -DTYPE_LIST='"types.inc"' ap_cast.cpp -o ap_cast
// The type list holds one entry per line:
//   FIXED(W, I, S, Q, O)  ap_fixed_base<W, I, S, Q, O, 0> assigned each double;
//   INT(W, S)             ap_int_base<W, S> assigned each double, then assigned each double held in an
//                         ap_fixed<128, 64> (the conversion from fixed point).
// stdin: the doubles as hexadecimal IEEE-754 bit patterns, one per line.
// stdout: for each entry in list order, one line per double (two blocks for INT: direct, then through
// ap_fixed): the W held bits as an unsigned hexadecimal number ("0x...").
#include <cstdio>
#include <cstring>
#include <vector>

#include <ap_fixed.h>
#include <ap_int.h>

template <int W, bool S>
static void print_bits(const ap_int_base<W, S>& v) {
  ap_uint<W> raw = v;
  std::puts(raw.to_string(16, false).c_str());
}

template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O>
static void emit_fixed(const std::vector<double>& xs) {
  for (double x : xs) {
    ap_fixed_base<W, I, S, Q, O, 0> v = x;
    ap_int_base<W, S> bits;  // the raw W-bit pattern, copied without conversion
    bits.V = v.V;
    print_bits(bits);
  }
}

template <int W, bool S>
static void emit_int(const std::vector<double>& xs) {
  for (double x : xs) {
    ap_int_base<W, S> v = x;
    print_bits(v);
  }
  for (double x : xs) {
    ap_fixed<128, 64> wide = x;
    ap_int_base<W, S> v = wide;
    print_bits(v);
  }
}

int main() {
  std::vector<double> xs;
  unsigned long long bits;
  while (std::scanf("%llx", &bits) == 1) {
    double x;
    std::memcpy(&x, &bits, sizeof x);
    xs.push_back(x);
  }
#define FIXED(W, I, S, Q, O) emit_fixed<W, I, S, Q, O>(xs);
#define INT(W, S) emit_int<W, S>(xs);
#include TYPE_LIST
  return 0;
}

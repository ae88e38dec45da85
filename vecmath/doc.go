// Package vecmath holds the float32 elementwise kernels of the training
// step that dominate its non-matrix work: exp (softmax) and GELU's tanh.
// Each has a scalar form (Exp32, Tanh32, the *Generic functions) and, on
// amd64 with AVX2, an assembly form that computes the same bits eight
// lanes at a time: same constants, same operations in the same order, no
// fused multiply-add. The tests hold the two to bit identity.
//
// It is its own package because Go assembly cannot sit in a package that
// uses cgo, as mod does for OpenBLAS.
package vecmath

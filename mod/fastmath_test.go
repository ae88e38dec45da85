package mod

import (
	"math"
	"testing"
)

func TestExp32Accuracy(t *testing.T) {
	var worst float64
	for x := -80.0; x < 80; x += 0.0137 {
		got := float64(exp32(float32(x)))
		want := math.Exp(float64(float32(x)))
		if rel := math.Abs(got-want) / want; rel > worst {
			worst = rel
		}
	}
	// float32 has a 6e-8 unit roundoff; 4 ulp is plenty for softmax and GELU.
	if worst > 5e-7 {
		t.Fatalf("exp32 worst relative error %g > 5e-7", worst)
	}
	t.Logf("exp32 worst relative error %.2g", worst)
}

func TestTanh32Accuracy(t *testing.T) {
	var worst float64
	for x := -12.0; x < 12; x += 0.00731 {
		got := float64(tanh(float32(x)))
		want := math.Tanh(float64(float32(x)))
		d := math.Abs(got - want)
		if math.Abs(want) > 1e-3 {
			d /= math.Abs(want) // relative error, except near zero
		}
		worst = math.Max(worst, d)
	}
	if worst > 5e-7 {
		t.Fatalf("tanh float32 worst error %g > 5e-7", worst)
	}
	t.Logf("tanh float32 worst error %.2g", worst)
}

func TestFastMathDoesNotAllocate(t *testing.T) {
	x := float32(0.3)
	if n := testing.AllocsPerRun(100, func() { x = exp(x) * 0.5; x = tanh(x) + 0.1 }); n > 0 {
		t.Fatalf("exp/tanh allocate %v times per call", n)
	}
}

func BenchmarkTanh32(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(i%200-100) * 0.05
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range x {
			x[j] = tanh(x[j]) * 3
		}
	}
}

func BenchmarkExp32(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(i%200-100) * 0.05
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range x {
			x[j] = exp(x[j]) * 1e-3
		}
	}
}

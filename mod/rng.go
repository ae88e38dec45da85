package mod

import "math"

// Float is the element type of the model. Training runs in float32; the
// gradient checks run the very same code in float64.
type Float interface{ ~float32 | ~float64 }

// rng is a small deterministic generator (splitmix64). The model owns no
// global randomness: every stream is derived from explicit seeds, so a batch
// or an initial weight is a pure function of its inputs.
type rng struct {
	state uint64
	spare float64
	has   bool
}

func newRNG(seed, stream uint64) *rng {
	return &rng{state: mix64(seed ^ mix64(stream+0x9e3779b97f4a7c15))}
}

func mix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (r *rng) uint64() uint64 {
	r.state += 0x9e3779b97f4a7c15
	return mix64(r.state)
}

// float64 is uniform in [0,1).
func (r *rng) float64() float64 { return float64(r.uint64()>>11) / (1 << 53) }

// normal is a standard normal sample (Box-Muller).
func (r *rng) normal() float64 {
	if r.has {
		r.has = false
		return r.spare
	}
	u1 := r.float64()
	for u1 == 0 {
		u1 = r.float64()
	}
	u2 := r.float64()
	m := math.Sqrt(-2 * math.Log(u1))
	r.spare, r.has = m*math.Sin(2*math.Pi*u2), true
	return m * math.Cos(2*math.Pi*u2)
}

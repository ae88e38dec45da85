#include "textflag.h"

// Each kernel handles n, a multiple of 8, eight lanes per iteration; the
// Go wrappers do the tail. Constants come pre-broadcast from a table of
// 32-byte rows (expTable, geluTable), so they are memory operands and
// leave the registers to the arithmetic. Operand order is Go's: the
// destination last, so VSUBPS B, A, D is D = A − B.

// func expScaledAVX2(dst, src *float32, n int, scale, sub float32, k *lanes8)
// dst[i] = exp32(src[i]*scale - sub), exactly as exp32 computes it.
TEXT ·expScaledAVX2(SB), NOSPLIT, $0-40
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS scale+24(FP), Y14
	VBROADCASTSS sub+28(FP), Y15
	MOVQ         k+32(FP), R8

exploop:
	CMPQ       CX, $8
	JL         expdone
	VMOVUPS    (SI), Y0
	VMULPS     Y14, Y0, Y0           // x = src*scale
	VSUBPS     Y15, Y0, Y0           // x -= sub
	VMULPS     0(R8), Y0, Y1         // t = x*log2e
	VADDPS     32(R8), Y1, Y1        // t += 0.5
	VCVTTPS2DQ Y1, Y2                // ni = int32(t), truncating
	VCVTDQ2PS  Y2, Y3
	VCMPPS     $0x1e, Y1, Y3, Y4     // float32(ni) > t
	VPADDD     Y4, Y2, Y2            // then ni-- (the mask is -1)
	VCVTDQ2PS  Y2, Y3                // n
	VMULPS     64(R8), Y3, Y4        // n*ln2hi
	VSUBPS     Y4, Y0, Y5            // r = x - n*ln2hi
	VMULPS     96(R8), Y3, Y4        // n*ln2lo
	VSUBPS     Y4, Y5, Y5            // r -= n*ln2lo
	VMULPS     160(R8), Y5, Y6       // p = r*(1/720)
	VADDPS     192(R8), Y6, Y6       // + 1/120
	VMULPS     Y6, Y5, Y6
	VADDPS     224(R8), Y6, Y6       // + 1/24
	VMULPS     Y6, Y5, Y6
	VADDPS     256(R8), Y6, Y6       // + 1/6
	VMULPS     Y6, Y5, Y6
	VADDPS     32(R8), Y6, Y6        // + 0.5
	VMULPS     Y6, Y5, Y6
	VADDPS     128(R8), Y6, Y6       // + 1
	VMULPS     Y6, Y5, Y6
	VADDPS     128(R8), Y6, Y6       // 1 + r*(...)
	VPSLLD     $23, Y2, Y2
	VPADDD     Y2, Y6, Y6            // bits(p) + ni<<23
	VCMPPS     $0x11, 320(R8), Y0, Y4 // x < -87.3: 0
	VANDNPS    Y6, Y4, Y6
	VCMPPS     $0x1e, 288(R8), Y0, Y4 // x > 88.7: +Inf
	VBLENDVPS  Y4, 352(R8), Y6, Y6
	VMOVUPS    Y6, (DI)
	ADDQ       $32, SI
	ADDQ       $32, DI
	SUBQ       $8, CX
	JMP        exploop

expdone:
	VZEROUPPER
	RET

// func geluAVX2(y, th, x *float32, n int, k *lanes8)
// th[i] = tanh32(u), y[i] = 0.5*x*(1+th[i]) with
// u = geluC*(x + 0.044715*x*x*x), exactly as geluForwardGeneric32.
TEXT ·geluAVX2(SB), NOSPLIT, $0-40
	MOVQ y+0(FP), DI
	MOVQ th+8(FP), DX
	MOVQ x+16(FP), SI
	MOVQ n+24(FP), CX
	MOVQ k+32(FP), R8

geluloop:
	CMPQ      CX, $8
	JL        geludone
	VMOVUPS   (SI), Y0              // v
	VMULPS    512(R8), Y0, Y1       // 0.044715*v
	VMULPS    Y0, Y1, Y1            // *v
	VMULPS    Y0, Y1, Y1            // *v
	VADDPS    Y1, Y0, Y1            // v + ...
	VMULPS    480(R8), Y1, Y1       // u = geluC*(...)
	VMULPS    Y1, Y1, Y2            // x2 = u*u
	VMULPS    0(R8), Y2, Y3         // p = x2*a0
	VADDPS    32(R8), Y3, Y3        // + a1
	VMULPS    Y2, Y3, Y3
	VADDPS    64(R8), Y3, Y3        // + a2
	VMULPS    Y2, Y3, Y3
	VADDPS    96(R8), Y3, Y3        // + a3
	VMULPS    Y2, Y3, Y3
	VADDPS    128(R8), Y3, Y3       // + a4
	VMULPS    Y2, Y3, Y3
	VADDPS    160(R8), Y3, Y3       // + a5
	VMULPS    Y2, Y3, Y3
	VADDPS    192(R8), Y3, Y3       // + a6
	VMULPS    Y1, Y3, Y3            // p *= u
	VMULPS    224(R8), Y2, Y4       // q = x2*b0
	VADDPS    256(R8), Y4, Y4       // + b1
	VMULPS    Y2, Y4, Y4
	VADDPS    288(R8), Y4, Y4       // + b2
	VMULPS    Y2, Y4, Y4
	VADDPS    320(R8), Y4, Y4       // + b3
	VDIVPS    Y4, Y3, Y3            // t = p/q
	VCMPPS    $0x1e, 352(R8), Y1, Y5 // u > clamp: 1
	VBLENDVPS Y5, 416(R8), Y3, Y3
	VCMPPS    $0x11, 384(R8), Y1, Y5 // u < -clamp: -1
	VBLENDVPS Y5, 448(R8), Y3, Y3
	VMOVUPS   Y3, (DX)
	VMULPS    544(R8), Y0, Y6       // 0.5*v
	VADDPS    416(R8), Y3, Y7       // 1 + t
	VMULPS    Y7, Y6, Y6
	VMOVUPS   Y6, (DI)
	ADDQ      $32, SI
	ADDQ      $32, DX
	ADDQ      $32, DI
	SUBQ      $8, CX
	JMP       geluloop

geludone:
	VZEROUPPER
	RET

// func adamwAVX2(param, grad, mom, vel *float32, n int, k *lanes8)
// One AdamW update, exactly as AdamWGeneric computes it. k's rows:
// 0 gradScale, 1 beta1, 2 1-beta1, 3 beta2, 4 1-beta2, 5 biasCorr1,
// 6 biasCorr2, 7 lr, 8 eps, 9 decay.
TEXT ·adamwAVX2(SB), NOSPLIT, $0-48
	MOVQ param+0(FP), DI
	MOVQ grad+8(FP), SI
	MOVQ mom+16(FP), DX
	MOVQ vel+24(FP), BX
	MOVQ n+32(FP), CX
	MOVQ k+40(FP), R8

adamloop:
	CMPQ    CX, $8
	JL      adamdone
	VMOVUPS (SI), Y0
	VMULPS  0(R8), Y0, Y0     // gi = g*gradScale
	VMOVUPS (DX), Y2
	VMULPS  32(R8), Y2, Y1    // beta1*m
	VMULPS  64(R8), Y0, Y3    // (1-beta1)*gi
	VADDPS  Y3, Y1, Y1        // mi
	VMOVUPS (BX), Y2
	VMULPS  96(R8), Y2, Y4    // beta2*v
	VMULPS  128(R8), Y0, Y3   // (1-beta2)*gi
	VMULPS  Y0, Y3, Y3        // *gi
	VADDPS  Y3, Y4, Y4        // vi
	VMOVUPS Y1, (DX)
	VMOVUPS Y4, (BX)
	VDIVPS  160(R8), Y1, Y1   // mi/biasCorr1
	VMULPS  224(R8), Y1, Y1   // lr*(mi/biasCorr1)
	VDIVPS  192(R8), Y4, Y4   // vi/biasCorr2
	VSQRTPS Y4, Y4
	VADDPS  256(R8), Y4, Y4   // + eps
	VDIVPS  Y4, Y1, Y1        // step
	VMOVUPS (DI), Y5
	VMULPS  288(R8), Y5, Y5   // p*decay
	VSUBPS  Y1, Y5, Y5        // - step
	VMOVUPS Y5, (DI)
	ADDQ    $32, DI
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, BX
	SUBQ    $8, CX
	JMP     adamloop

adamdone:
	VZEROUPPER
	RET

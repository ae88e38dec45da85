// Package export writes a checkpoint's weights as named tensors for other
// frameworks: model.safetensors (one float32 tensor per parameter, with its
// real shape) and config.json (the architecture and the tokenizer), the
// directory tools/modcoord_torch.py loads into a PyTorch module.
//
// Checkpoints (checkpoint/) store the flat parameter vector cut into
// ranges, plus Adam moments, because that is what training resumes from.
// An export is what inference in another framework needs instead: no
// optimizer state, and each tensor under a stable name.
//
// Tensor names (Name maps mod's Layout names onto them) follow the module
// tree of the PyTorch loader, so that the safetensors file is its
// state_dict:
//
//	tok_emb.weight                [vocab, d_model]
//	pos_emb.weight                [seq_len, d_model]   learned positions only
//	layers.<i>.attn_norm.weight   [d_model]
//	layers.<i>.attn.wqkv          [d_model, 3·d_model]  columns q | k | v, heads contiguous
//	layers.<i>.attn.wo            [d_model, d_model]
//	layers.<i>.mlp_norm.weight    [d_model]
//	layers.<i>.mlp.w1             [d_model, mlp_hidden]
//	layers.<i>.mlp.w2             [mlp_hidden, d_model]
//	layers.<i>.router             [d_model]             routed layers only
//	layers.<i>.predictor.w1       [d_model, predictor_hidden]  predictor decision only
//	layers.<i>.predictor.b1       [predictor_hidden]
//	layers.<i>.predictor.w2       [predictor_hidden]
//	layers.<i>.predictor.b2       [1]
//	norm_f.weight                 [d_model]
//	lm_head                       [d_model, vocab]
//
// Matrices keep mod's orientation, [in, out] with y = x·W, the transpose
// of torch.nn.Linear's weight; names ending in .weight (embeddings and
// norm gains) are laid out as the torch modules of the same kind expect.
// Embeddings are not tied.
package export

// Package isoflop runs an isoFLOP comparison of dense and Mixture-of-Depths
// models: for each training-FLOP budget it trains a family of model sizes,
// each for exactly the number of steps the budget buys, as a dense model and
// as MoD variants (learned routing at two capacities by default; random
// routing, the paper's control, and routing on every layer on request),
// with one or more seeds, then records every run's validation loss and the
// causal decision's precision, recall and F1 against top-k (runs.csv,
// runs.json), plots mean loss ± the seed spread against parameters with one
// panel per budget (isoflop.png, the paper's isoFLOP figure) and tabulates
// the best shape of each variant per budget, with a verdict on whether each
// difference exceeds the seed spread (summary.md).
//
// Every finished run is also saved to its own file under runs/, so a sweep
// stopped at any point resumes where it stopped when run again into the
// same directory, and writes the same tables as one that never stopped.
//
// It answers the question of Raposo et al. 2024 (arXiv 2404.02258) at this
// project's scale: at equal training compute, does MoD match or beat the
// isoFLOP-optimal dense model, and at what cost per forward pass?
package isoflop

// Package isoflop runs an isoFLOP comparison of dense and Mixture-of-Depths
// models: for each training-FLOP budget it trains a family of model sizes,
// each for exactly the number of steps the budget buys, as a dense model and
// as MoD models at two capacities, then records every run's validation loss
// (runs.csv, runs.json), plots loss against parameters with one panel per
// budget (isoflop.png, the paper's isoFLOP figure) and tabulates the best
// model of each variant per budget (summary.md).
//
// It answers the question of Raposo et al. 2024 (arXiv 2404.02258) at this
// project's scale: at equal training compute, does MoD match or beat the
// isoFLOP-optimal dense model, and at what cost per forward pass?
package isoflop

"""tff_hgb: Hierarchical Gradient Blending for multi-modal federated learning on TFF."""

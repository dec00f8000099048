"""mltag training package: data, backbones, heads, losses, recipe, metrics, export."""

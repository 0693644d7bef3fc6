"""One graph of the golden checkpoint, traced in the exported form (for tests of what the export writes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def traced_golden_graph(golden_dir: Path, tmp_path: Path, name: str = "generator_frame"
                        ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The fp32 ONNX graph ``name`` of the golden checkpoint (tiny-test) as the exporter traces it, and a feed."""
    from fomm_deploy.export.tracing import export_form, export_graph
    from fomm_deploy.export.inputs import sample_feeds
    from fomm_deploy.runtime.core.config import resolve_config
    from fomm_deploy.runtime.core.contract import graph_specs
    from fomm_deploy.training.checkpoint import load_checkpoint
    from fomm_deploy.training.model.wrappers import flat_module

    cfg = resolve_config("tiny-test")
    loaded = load_checkpoint(golden_dir / "checkpoint.pth.tar", cfg)
    feed = sample_feeds(loaded.models, cfg, 1, 0)[name]
    module = export_form(flat_module(name, loaded.models, cfg.estimate_jacobian))
    return export_graph(module, graph_specs(cfg)[name], feed, tmp_path / f"{name}.onnx"), feed

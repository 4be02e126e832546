"""The configuration schema: nested, frozen sections, unknown keys forbidden.

Defaults live here and only here. Every field has a description; they become the JSON schema
(`tuneline config schema`) and the CLI's help. This module imports no runtime code.
"""

from __future__ import annotations

from tuneline.config.metric_names import LOWER_IS_BETTER, METRICS
from tuneline.config.schema.base import PATH_FIELD, Encoding, Section, known_encoding
from tuneline.config.schema.data import (
    SOURCE_TYPES,
    CheckCode,
    ChecksConfig,
    DataConfig,
    HfDiskSource,
    ImageFolderSource,
    ImagesConfig,
    JsonlSource,
    ManifestSource,
    SourceConfig,
    SplitConfig,
)
from tuneline.config.schema.evaluate import (
    AuditConfig,
    BaselinesConfig,
    EvalConfig,
    GateConfig,
    GuardRule,
    ThresholdConfig,
)
from tuneline.config.schema.launch import (
    GcpBatchTarget,
    GkeTarget,
    LaunchConfig,
    SkypilotTarget,
    TorchrunTarget,
    VertexTarget,
)
from tuneline.config.schema.loop import LoopConfig, LoopDecisionConfig, ServeLoopConfig
from tuneline.config.schema.root import Config
from tuneline.config.schema.run import ModelConfig, RegistryConfig, RunConfig
from tuneline.config.schema.serve import (
    CascadeTargetConfig,
    RemoteFallbackConfig,
    ServeAuthConfig,
    ServeBatchingConfig,
    ServeBudgetConfig,
    ServeCacheConfig,
    ServeCascadeConfig,
    ServeConfig,
    ServeCostsConfig,
    ServeDriftConfig,
    ServeLimitsConfig,
    ServeWatchConfig,
    VllmConfig,
)
from tuneline.config.schema.sweep import (
    SWEEP_COSTS,
    SWEEP_OVERRIDABLE,
    SweepCandidate,
    SweepConfig,
    SweepParam,
    SweepValue,
)
from tuneline.config.schema.train import (
    CostConfig,
    DistillConfig,
    DistributedConfig,
    DpConfig,
    LoraConfig,
    PrivacyConfig,
    TrainConfig,
)

__all__ = [
    "LOWER_IS_BETTER",
    "METRICS",
    "AuditConfig",
    "BaselinesConfig",
    "CheckCode",
    "ChecksConfig",
    "Config",
    "CostConfig",
    "DataConfig",
    "DistillConfig",
    "DistributedConfig",
    "DpConfig",
    "Encoding",
    "EvalConfig",
    "GateConfig",
    "GcpBatchTarget",
    "GkeTarget",
    "GuardRule",
    "HfDiskSource",
    "ImageFolderSource",
    "ImagesConfig",
    "JsonlSource",
    "LaunchConfig",
    "LoopConfig",
    "LoopDecisionConfig",
    "LoraConfig",
    "ManifestSource",
    "ModelConfig",
    "PATH_FIELD",
    "PrivacyConfig",
    "RegistryConfig",
    "RunConfig",
    "SOURCE_TYPES",
    "SWEEP_COSTS",
    "SWEEP_OVERRIDABLE",
    "Section",
    "CascadeTargetConfig",
    "RemoteFallbackConfig",
    "ServeAuthConfig",
    "ServeBudgetConfig",
    "ServeCascadeConfig",
    "ServeCostsConfig",
    "ServeBatchingConfig",
    "ServeCacheConfig",
    "ServeConfig",
    "ServeDriftConfig",
    "ServeLimitsConfig",
    "ServeLoopConfig",
    "ServeWatchConfig",
    "SkypilotTarget",
    "SourceConfig",
    "SplitConfig",
    "SweepCandidate",
    "SweepConfig",
    "SweepParam",
    "SweepValue",
    "ThresholdConfig",
    "TorchrunTarget",
    "TrainConfig",
    "VertexTarget",
    "VllmConfig",
    "known_encoding",
]

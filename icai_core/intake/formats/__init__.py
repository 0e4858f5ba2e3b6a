"""Input format units: one module per layout, each declaring `FORMAT = InputFormat(...)` once
(name, description, signature columns, builder). `icai_core.intake.registry` lists them."""

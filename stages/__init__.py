"""The CRISP-DM phases as pure, typed functions: one module per phase."""

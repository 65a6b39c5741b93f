from tests.modules.file.fixtures import (  # noqa: F401 (fixtures, found by name)
    app_settings,
    storage,
    storage_backend,
    storage_dir,
)

from tests.fetch.conftest import MODEL, mirror, mirror_tree  # noqa: F401  (the local Hub mirror fixtures)
from tests.pipelines.conftest import mnli_repo, qa_repo  # noqa: F401  (small synthetic repos)

__all__ = ["MODEL"]

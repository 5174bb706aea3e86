"""Shared fixtures: small synthetic data made once per session, the real Criteo sample when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.quiet import quiet_libraries

quiet_libraries()

from recsys.data.cache import PreparedCache  # noqa: E402
from recsys.data.prepare import PrepareOptions, prepare  # noqa: E402
from recsys.data.synth import SynthConfig  # noqa: E402
from recsys.data.synth_files import write_synthetic  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CRITEO_SAMPLE = SHARED_DATA / "criteo" / "train_8k.tsv"
SYNTHETIC = SynthConfig(rows=40_000, cardinality_scale=0.002, seed=3)


def modules_loaded_by(statement: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with one of `prefixes` that a fresh interpreter has loaded after `statement`."""
    import ast
    import subprocess
    import sys

    code = f"import sys; {statement}; print(sorted(name for name in sys.modules if name.startswith({prefixes!r})))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return ast.literal_eval(output.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def criteo_sample() -> Path:
    if not CRITEO_SAMPLE.exists():
        pytest.skip(f"real Criteo sample {CRITEO_SAMPLE} is absent")
    return CRITEO_SAMPLE


@pytest.fixture(scope="session")
def synthetic_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "synthetic.tsv"
    write_synthetic(SYNTHETIC, path)
    return path


@pytest.fixture(scope="session")
def synthetic_cache(synthetic_file, tmp_path_factory) -> PreparedCache:
    return prepare([synthetic_file], tmp_path_factory.mktemp("cache") / "cache", PrepareOptions())


def write_movielens_like(
    directory: Path, seed: int = 5, users: int = 120, movies: int = 80, ratings: int = 6000
) -> Path:
    """A MovieLens-layout directory with a planted signal: everyone likes Genre0, each user one more genre.

    A rating is high (>= 4) with probability 0.9 when the movie has a genre its user likes, 0.1
    otherwise, so a model must read the genre bag (and, to do best, the user) to rank well.
    """
    import numpy as np

    generator = np.random.default_rng(seed)
    genres = [f"Genre{index}" for index in range(8)]
    movie_genres = [generator.choice(8, size=generator.integers(1, 4), replace=False) for _ in range(movies)]
    liked = [{0, int(generator.integers(1, 8))} for _ in range(users)]
    directory.mkdir(parents=True)
    movie_lines = ["movieId,title,genres"] + [
        f"{movie},Film {movie} ({1950 + movie % 60}),{'|'.join(genres[index] for index in chosen)}"
        for movie, chosen in enumerate(movie_genres)
    ]
    (directory / "movies.csv").write_text("\n".join(movie_lines) + "\n")
    rating_lines = ["userId,movieId,rating,timestamp"]
    for timestamp in range(ratings):
        user, movie = int(generator.integers(users)), int(generator.integers(movies))
        likes = bool(liked[user] & set(movie_genres[movie].tolist()))
        high = generator.random() < (0.9 if likes else 0.1)
        rating_lines.append(f"{user},{movie},{4.5 if high else 2.0},{timestamp}")
    (directory / "ratings.csv").write_text("\n".join(rating_lines) + "\n")
    return directory


@pytest.fixture(scope="session")
def bag_cache(tmp_path_factory) -> PreparedCache:
    """A prepared MovieLens-like cache: no dense features, a genre bag per row (see write_movielens_like)."""
    root = tmp_path_factory.mktemp("movielens_like")
    directory = write_movielens_like(root / "raw")
    return prepare([directory], root / "cache", PrepareOptions(format="movielens"))


@pytest.fixture(scope="session")
def checkpoints(synthetic_cache, tmp_path_factory) -> Path:
    """The checkpoint directory of one small DLRM with full tables (one epoch); tests must not change it."""
    from recsys.tables import spec_from_mapping
    from recsys.train.config import TrainConfig
    from recsys.train.job import Job
    from recsys.train.loop import train
    from tests.train.conftest import SMALL_MODEL

    directory = tmp_path_factory.mktemp("checkpointed") / "checkpoints"
    config = TrainConfig(epochs=1, batch_size=4096, progress=False, checkpoint_dir=str(directory))
    train(Job(synthetic_cache, spec_from_mapping({"strategy": "full"}), "dlrm", config, dict(SMALL_MODEL)))
    return directory


EXPORTED_TABLES = {
    "full": {"strategy": "full"},
    "hashing": {"strategy": "hashing", "compression": 10},
    "qr": {"strategy": "qr", "compression": 10},
    "unified": {"strategy": "unified", "compression": 10},
    "mixed_dim": {"strategy": "mixed_dim", "compression": 2},
    "pruned": {"strategy": "pruned", "compression": 10, "prune_end": 0.5},
    "graphhash": {"strategy": "graphhash", "compression": 10},
    "optembed": {"strategy": "optembed", "compression": 10, "generations": 2, "population": 6, "parents": 3},
    "robe": {"strategy": "robe", "compression": 10},
    "tt": {"strategy": "tt", "compression": 10},
    "dhe": {"strategy": "dhe", "compression": 100},
    "cce": {"strategy": "cce", "compression": 10},
    "managed": {"strategy": "managed", "compression": 10, "eviction_interval": 5},
}
"""A table spec per strategy: what export and serving are tested with."""


@pytest.fixture(scope="session", params=sorted(EXPORTED_TABLES))
def exported(request, synthetic_cache, tmp_path_factory):
    """A DLRM trained with each strategy, and its exported artifact: (training result, directory, job)."""
    from recsys.export.artifact import export_model
    from recsys.tables import spec_from_mapping
    from recsys.train.config import TrainConfig
    from recsys.train.finished import finished_model
    from recsys.train.job import Job
    from recsys.train.loop import train
    from tests.train.conftest import SMALL_MODEL

    config = TrainConfig(epochs=1, batch_size=512, progress=False)
    job = Job(synthetic_cache, spec_from_mapping(EXPORTED_TABLES[request.param]), "dlrm", config, dict(SMALL_MODEL))
    result = train(job)
    directory = tmp_path_factory.mktemp("artifact") / "model"
    export_model(finished_model(job, result.model, result.metrics), directory)
    return result, directory, job

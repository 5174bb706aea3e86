"""MovieLens ratings as clicks (Harper & Konstan, "The MovieLens Datasets: History and Context", TiiS 2015).

Reads a MovieLens directory in either layout GroupLens ships:

    latest / latest-small / 25M:  ratings.csv (userId,movieId,rating,timestamp), movies.csv (movieId,title,genres)
    1M:                           ratings.dat, movies.dat, users.dat (UserID::Gender::Age::Occupation::Zip-code)

Each rating is a row; a rating >= 4 counts as a click (label 1). Features, all categorical:

    userId, movieId        the ids as they are
    genres                 a bag: every genre of the movie ("Comedy|Romance" -> two ids)
    year                   the release year from the title ("Heat (1995)"); missing when the title has none
    gender, age, occupation, zip    the user's side features, when users.dat exists (1M)

String values (genres, gender, zip) become ids by the `string` and `string_bag` field kinds (a fixed
63-bit hash, `recsys.data.fields.string_id`), so training and serving agree without a vocabulary.
The schema and the raw fields of a served model are derived from `movielens_fields`. Rows are
ordered by timestamp (file order among ties) before the split, so validation and test are the
latest ratings, as a recommender meets them. Ratings are
checked like every raw format (see `recsys.data.text`); a rating of a movie or user that the side
files do not describe is a bad row; a malformed side-file line is an error naming its file and line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.bad_rows import BadRowTally
from recsys.data.fields import MISSING_ID, Kind, Order, String, StringBag, Threshold
from recsys.data.schema import DatasetSchema, raw_fields_of, schema_of
from recsys.data.text import TextFormat

RATING_FIELDS = (("userId", Kind()), ("movieId", Kind()), ("rating", Threshold()), ("timestamp", Order()))
RATINGS_CSV = TextFormat(
    name="movielens", title="MovieLens ratings CSV", separator=",", header=True, fields=RATING_FIELDS, line_numbers=True
)
RATINGS_DAT = TextFormat(
    name="movielens",
    title="MovieLens ratings.dat",
    separator=",",
    raw_separator=b"::",
    fields=RATING_FIELDS,
    line_numbers=True,
)
GENRES, TEXT = StringBag(), String()
MOVIE_FIELDS = (("genres", GENRES), ("year", Kind()))
USER_FIELDS = (("gender", TEXT), ("age", Kind()), ("occupation", Kind()), ("zip", TEXT))
USER_FEATURES = tuple(name for name, _ in USER_FIELDS)
YEAR = re.compile(r"\((\d{4})\)\s*$")


def movielens_fields(with_users: bool) -> tuple:
    """A prepared MovieLens row as fields: the click label, the ids, the movie's and the user's features."""
    ids = (("label", Threshold()), ("userId", Kind()), ("movieId", Kind()))
    return (*ids, *MOVIE_FIELDS, *(USER_FIELDS if with_users else ()))


def movielens_raw_fields(with_users: bool) -> list[dict]:
    """The raw fields a served MovieLens model takes: ids, the genre names, the year, the user's side features."""
    return raw_fields_of(movielens_fields(with_users))


def movielens_schema(with_users: bool) -> DatasetSchema:
    return schema_of("movielens", movielens_fields(with_users))


def layout(directory: Path) -> tuple[Path, Path, Path | None]:
    """(ratings, movies, users or None) of a MovieLens directory; a clear error when it is not one."""
    for ratings, movies, users in (("ratings.csv", "movies.csv", None), ("ratings.dat", "movies.dat", "users.dat")):
        if (directory / ratings).is_file():
            if not (directory / movies).is_file():
                raise FileNotFoundError(f"{directory / ratings} needs {movies} beside it, which is missing")
            user_path = directory / users if users and (directory / users).is_file() else None
            return directory / ratings, directory / movies, user_path
    raise FileNotFoundError(f"{directory}: not a MovieLens directory (no ratings.csv or ratings.dat)")


def movielens_directory(paths: list[Path]) -> Path:
    """The one MovieLens directory given (or the directory of the ratings file given)."""
    if len(paths) != 1:
        raise ValueError(f"MovieLens reads one directory (with ratings and movies files), got {len(paths)} paths")
    return paths[0] if paths[0].is_dir() else paths[0].parent


def read_movielens(
    paths: list[Path], tally: BadRowTally, block_bytes: int = 32 << 20, lines: bool = False
) -> Iterator[tuple[pl.DataFrame, int]]:
    """Yield the whole prepared dataset as one frame (MovieLens fits in memory) and the raw bytes read.

    With `lines`, each row also carries the ratings file (`file`) and its line there (`line`), so that
    rows ordered by time can be joined back to the input.
    """
    ratings_path, movies_path, users_path = layout(movielens_directory(paths))
    ratings_format = RATINGS_CSV if ratings_path.suffix == ".csv" else RATINGS_DAT
    ratings = pl.concat([frame for frame, _ in ratings_format.read([ratings_path], tally, block_bytes)])
    movies = read_movies(movies_path)
    users = read_users(users_path) if users_path else None
    joined = join_side_features(ratings, movies, users, str(ratings_path), tally)
    schema = movielens_schema(users is not None)
    provenance = [pl.lit(str(ratings_path)).alias("file"), pl.col("line")] if lines else []
    ordered = (
        joined.sort("timestamp", maintain_order=True)
        .rename({"rating": schema.label})
        .select([*schema.columns, *provenance])
    )
    yield ordered, sum(path.stat().st_size for path in (ratings_path, movies_path, users_path) if path)


def join_side_features(
    ratings: pl.DataFrame, movies: pl.DataFrame, users: pl.DataFrame | None, path: str, tally: BadRowTally
) -> pl.DataFrame:
    """Ratings with their movie's (and user's) features; ratings of undescribed movies or users are bad rows."""
    for side, key, name in ((movies, "movieId", "movies"), (users, "userId", "users")):
        if side is None:
            continue
        unknown = ratings.filter(~pl.col(key).is_in(side[key].implode()))
        for line, value in unknown.select("line", key).iter_rows():
            tally.report(path, line, f"{key} not in {name}", f"{key}: {value} is not in the {name} file")
        ratings = ratings.join(side, on=key, how="inner", maintain_order="left")
    return ratings


def read_side_file(path: Path, field_count: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a movies/users file: CSV with a header, or `::`-separated without one."""
    text = decode(path)
    if path.suffix == ".csv":
        rows = enumerate(csv.reader(io.StringIO(text)), start=1)
        next(rows, None)
    else:
        rows = enumerate((line.split("::") for line in text.splitlines()), start=1)
    for line, fields in rows:
        if not fields or fields == [""]:
            continue
        if len(fields) != field_count:
            raise ValueError(f"{path}:{line}: expected {field_count} fields, found {len(fields)}")
        yield line, fields


def decode(path: Path) -> str:
    """UTF-8 (latest) or Latin-1 (1M, whose titles carry accented Latin-1 bytes)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def integer_field(path: Path, line: int, name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{path}:{line}: {name}: expected an integer, got {value!r}") from None


def read_movies(path: Path) -> pl.DataFrame:
    """movieId, genres (list of ids), year of every movie."""
    ids, genres, years = [], [], []
    for line, (movie, title, genre_text) in read_side_file(path, 3):
        ids.append(integer_field(path, line, "movieId", movie))
        names = [name for name in genre_text.split("|") if name and name != "(no genres listed)"]
        (bag,) = GENRES.encode(names)
        genres.append(bag)
        year = YEAR.search(title)
        years.append(int(year.group(1)) if year else MISSING_ID)
    check_unique(path, "movieId", ids)
    return pl.DataFrame(
        {"movieId": ids, "genres": genres, "year": years},
        schema={"movieId": pl.Int64, "genres": pl.List(pl.Int64), "year": pl.Int64},
    )


def read_users(path: Path) -> pl.DataFrame:
    """userId, gender, age, occupation, zip of every user (MovieLens 1M's users.dat)."""
    rows = []
    for line, (user, gender, age, occupation, zip_code) in read_side_file(path, 5):
        rows.append(
            (
                integer_field(path, line, "UserID", user),
                TEXT.encode(gender)[0],
                integer_field(path, line, "Age", age),
                integer_field(path, line, "Occupation", occupation),
                TEXT.encode(zip_code)[0],
            )
        )
    check_unique(path, "userId", [row[0] for row in rows])
    return pl.DataFrame(rows, schema={"userId": pl.Int64, **{name: pl.Int64 for name in USER_FEATURES}}, orient="row")


def check_unique(path: Path, name: str, ids: list[int]) -> None:
    values, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{path}: {name} {values[counts > 1][0]} appears more than once")

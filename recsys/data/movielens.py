"""MovieLens ratings as clicks (Harper & Konstan, "The MovieLens Datasets: History and Context", TiiS 2015).

Reads a MovieLens directory in either layout GroupLens ships:

    latest / latest-small / 25M:  ratings.csv (userId,movieId,rating,timestamp), movies.csv (movieId,title,genres)
    1M:                           ratings.dat, movies.dat, users.dat (UserID::Gender::Age::Occupation::Zip-code)
    100K:                         u.data or a split's ratings file (ua.base, u1.test, ...: user, item, rating,
                                  timestamp, tab separated), u.item (id|title|release date|video date|URL|19
                                  genre flags), u.user (id|age|gender|occupation|zip), both pipe separated, Latin-1

A 100K directory holds several ratings files (the whole u.data and the ua/ub/u1..u5 splits): give the
directory for u.data, or the ratings file itself (its directory holds u.item and u.user).

Each rating is a row; a rating >= 4 counts as a click (label 1). Features, all categorical:

    userId, movieId        the ids as they are
    genres                 a bag: every genre of the movie ("Comedy|Romance" -> two ids)
    year                   the release year from the title ("Heat (1995)"); missing when the title has none
    gender, age, occupation, zip    the user's side features, when users.dat (1M) or u.user (100K) exists;
                           1M codes occupations as integers, 100K names them (a string)

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
from dataclasses import dataclass
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
RATINGS_100K = TextFormat(
    name="movielens", title="MovieLens 100K ratings", separator="\t", fields=RATING_FIELDS, line_numbers=True
)
GENRES, TEXT = StringBag(), String()
MOVIE_FIELDS = (("genres", GENRES), ("year", Kind()))
USER_FIELDS = (("gender", TEXT), ("age", Kind()), ("occupation", Kind()), ("zip", TEXT))
USER_FIELDS_100K = (("gender", TEXT), ("age", Kind()), ("occupation", TEXT), ("zip", TEXT))
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
"""u.item's 19 genre flags in order (u.genre lists them with their index)."""
USER_FEATURES = tuple(name for name, _ in USER_FIELDS)
YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass(frozen=True)
class Layout:
    """The files of one MovieLens release: ratings, movies, users (None where the release has none)."""

    release: str
    ratings: Path
    movies: Path
    users: Path | None

    @property
    def ratings_format(self) -> TextFormat:
        return {"latest": RATINGS_CSV, "1m": RATINGS_DAT, "100k": RATINGS_100K}[self.release]

    @property
    def fields(self) -> tuple:
        """A prepared row as fields: the click label, the ids, the movie's and (where known) the user's features."""
        ids = (("label", Threshold()), ("userId", Kind()), ("movieId", Kind()))
        users = () if self.users is None else USER_FIELDS_100K if self.release == "100k" else USER_FIELDS
        return (*ids, *MOVIE_FIELDS, *users)

    @property
    def files(self) -> list[Path]:
        return [path for path in (self.ratings, self.movies, self.users) if path is not None]


def movielens_raw_fields(paths: list[Path]) -> list[dict]:
    """The raw fields a served MovieLens model takes: ids, the genre names, the year, the user's side features."""
    return raw_fields_of(layout_of(paths).fields)


def movielens_schema(paths: list[Path]) -> DatasetSchema:
    return schema_of("movielens", layout_of(paths).fields)


RELEASES = (
    ("latest", "ratings.csv", "movies.csv", None),
    ("1m", "ratings.dat", "movies.dat", "users.dat"),
    ("100k", "u.data", "u.item", "u.user"),
)


def layout_of(paths: list[Path]) -> Layout:
    """The release and files of the MovieLens directory (or 100K ratings file) given; a clear error otherwise."""
    if len(paths) != 1:
        raise ValueError(f"MovieLens reads one directory (with ratings and movies files), got {len(paths)} paths")
    path = paths[0]
    directory = path if path.is_dir() else path.parent
    if not path.is_dir() and (directory / "u.item").is_file():  # a 100K split's ratings file, e.g. ua.base
        return Layout("100k", path, directory / "u.item", present(directory / "u.user"))
    for release, ratings, movies, users in RELEASES:
        if (directory / ratings).is_file():
            if not (directory / movies).is_file():
                raise FileNotFoundError(f"{directory / ratings} needs {movies} beside it, which is missing")
            return Layout(release, directory / ratings, directory / movies, users and present(directory / users))
    if (directory / "u.item").is_file():
        splits = ", ".join(sorted(item.name for item in directory.glob("u*.base")))
        raise FileNotFoundError(
            f"{directory}: a MovieLens 100K directory without u.data; give one of its ratings files ({splits})"
        )
    raise FileNotFoundError(f"{directory}: not a MovieLens directory (no ratings.csv, ratings.dat or u.data)")


def present(path: Path) -> Path | None:
    return path if path.is_file() else None


def read_movielens(
    paths: list[Path], tally: BadRowTally, block_bytes: int = 32 << 20, lines: bool = False
) -> Iterator[tuple[pl.DataFrame, int]]:
    """Yield the whole prepared dataset as one frame (MovieLens fits in memory) and the raw bytes read.

    With `lines`, each row also carries the ratings file (`file`) and its line there (`line`), so that
    rows ordered by time can be joined back to the input.
    """
    files = layout_of(paths)
    ratings = pl.concat([frame for frame, _ in files.ratings_format.read([files.ratings], tally, block_bytes)])
    hundred_k = files.release == "100k"
    movies = read_items_100k(files.movies) if hundred_k else read_movies(files.movies)
    users = None if files.users is None else read_users_100k(files.users) if hundred_k else read_users(files.users)
    joined = join_side_features(ratings, movies, users, str(files.ratings), tally)
    schema = schema_of("movielens", files.fields)
    provenance = [pl.lit(str(files.ratings)).alias("file"), pl.col("line")] if lines else []
    ordered = (
        joined.sort("timestamp", maintain_order=True)
        .rename({"rating": schema.label})
        .select([*schema.columns, *provenance])
    )
    yield ordered, sum(path.stat().st_size for path in files.files)


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


def pipe_rows(path: Path, field_count: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a 100K side file: `|`-separated, Latin-1, no header."""
    for line, text in enumerate(path.read_bytes().decode("latin-1").splitlines(), start=1):
        if not text.strip():
            continue
        fields = text.split("|")
        if len(fields) != field_count:
            raise ValueError(f"{path}:{line}: expected {field_count} |-separated fields, found {len(fields)}")
        yield line, fields


def read_items_100k(path: Path) -> pl.DataFrame:
    """movieId, genres (the flagged genres' ids), year (from the title, else the release date) of u.item."""
    ids, genres, years = [], [], []
    for line, fields in pipe_rows(path, 5 + len(GENRES_100K)):
        ids.append(integer_field(path, line, "movie id", fields[0]))
        flags = fields[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise ValueError(f"{path}:{line}: genre flags must be 0 or 1, got {'|'.join(flags)!r}")
        (bag,) = GENRES.encode([name for name, flag in zip(GENRES_100K, flags) if flag == "1"])
        genres.append(bag)
        year = YEAR.search(fields[1]) or re.search(r"(\d{4})$", fields[2])
        years.append(int(year.group(1)) if year else MISSING_ID)
    check_unique(path, "movie id", ids)
    return pl.DataFrame(
        {"movieId": ids, "genres": genres, "year": years},
        schema={"movieId": pl.Int64, "genres": pl.List(pl.Int64), "year": pl.Int64},
    )


def read_users_100k(path: Path) -> pl.DataFrame:
    """userId, gender, age, occupation (its name), zip of u.user."""
    rows = []
    for line, (user, age, gender, occupation, zip_code) in pipe_rows(path, 5):
        user_id, years = integer_field(path, line, "user id", user), integer_field(path, line, "age", age)
        rows.append((user_id, TEXT.encode(gender)[0], years, TEXT.encode(occupation)[0], TEXT.encode(zip_code)[0]))
    check_unique(path, "user id", [row[0] for row in rows])
    return pl.DataFrame(rows, schema={"userId": pl.Int64, **{name: pl.Int64 for name in USER_FEATURES}}, orient="row")


def check_unique(path: Path, name: str, ids: list[int]) -> None:
    values, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{path}: {name} {values[counts > 1][0]} appears more than once")

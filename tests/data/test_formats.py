"""Dataset adapters (Avazu, Frappe, MovieLens): raw rows -> the prepared schema, under the bad-row policy.

Small raw files are written here by the tests; the real samples in ../shared/data are read when present.
"""

from __future__ import annotations

import datetime
import math
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from recsys.data.bad_rows import BadRowTally, MalformedRowError
from recsys.data.fields import MISSING_ID, string_id
from recsys.data.formats import FORMATS, dataset_format
from recsys.data.prepare import PrepareOptions, prepare
from tests.conftest import SHARED_DATA

AVAZU_HEADER = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,"
    "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
)


def avazu_row(click: int = 0, hour: str = "14102917", site_id: str = "1fbe01fe", c20: str = "-1") -> str:
    hexes = [site_id, "f3845767", "28905ebd", "ecad2386", "7801e8d9", "07d7df22", "a99f214a", "96809ac8", "711ee120"]
    return ",".join(["1000009418151094273", str(click), hour, "1005", "0", *hexes, "1", "2", "15706", "320", "50",
                     "1722", "0", "35", c20, "79"])  # fmt: skip


def read(format_name: str, paths: list[Path], skip: bool = False) -> tuple[pl.DataFrame, BadRowTally]:
    tally = BadRowTally(skip=skip)
    frames = [frame for frame, _ in dataset_format(format_name).read(paths, tally, 1 << 20)]
    return pl.concat(frames), tally


def write(path: Path, lines: list[str], line_end: str = "\n") -> Path:
    path.write_text(line_end.join(lines) + line_end)
    return path


def test_avazu_rows_become_hour_weekday_and_ids(tmp_path):
    path = write(tmp_path / "train.csv", [AVAZU_HEADER, avazu_row(1, "14102917", "0000000a", "100084"), avazu_row()])
    frame, _ = read("avazu", [path])
    schema = FORMATS["avazu"].schema([path])
    assert frame.columns == list(schema.columns)
    assert "id" not in frame.columns and schema.dense_features == ()
    first = frame.row(0, named=True)
    moment = datetime.datetime(2014, 10, 29, 17)
    assert first["click"] == 1.0 and frame["click"][1] == 0.0
    assert (first["hour_of_day"], first["hour_weekday"]) == (moment.hour, moment.weekday())
    assert first["site_id"] == 10 and first["device_model"] == int("711ee120", 16)
    assert (first["C20"], frame["C20"][1]) == (100084, -1)
    assert first["C1"] == 1005 and first["device_conn_type"] == 2


def test_avazu_header_is_optional_and_line_numbers_count_it(tmp_path):
    with_header = write(tmp_path / "a.csv", [AVAZU_HEADER, avazu_row(), avazu_row()])
    without = write(tmp_path / "b.csv", [avazu_row(), avazu_row()], line_end="\r\n")
    frame, _ = read("avazu", [with_header, without])
    assert len(frame) == 4
    bad = write(tmp_path / "bad.csv", [AVAZU_HEADER, avazu_row(), avazu_row(hour="14102999")])
    with pytest.raises(MalformedRowError, match=r"bad.csv:3: hour: expected an hour as YYMMDDHH, got '14102999'"):
        read("avazu", [bad])


@pytest.mark.parametrize(
    "line, message",
    [
        (avazu_row(click=2), "click: expected 0 or 1, got '2'"),
        (avazu_row(site_id="xyz"), "site_id: expected an unsigned hex string of at most 8 digits, got 'xyz'"),
        (avazu_row().replace(",1005,", ",10x5,"), "C1: expected an integer, got '10x5'"),
        (avazu_row() + ",7", "expected 24 comma-separated fields, found 25"),
    ],
)
def test_avazu_bad_rows_name_line_and_field(tmp_path, line, message):
    path = write(tmp_path / "bad.csv", [AVAZU_HEADER, avazu_row(), line, avazu_row()])
    with pytest.raises(MalformedRowError) as caught:
        read("avazu", [path])
    assert caught.value.line == 3 and message in str(caught.value)
    frame, tally = read("avazu", [path], skip=True)
    assert len(frame) == 2 and tally.total == 1


def test_frappe_libfm_labels_and_indices(tmp_path):
    lines = ["1 " + " ".join(f"{index * 100 + 7}:1" for index in range(10)), "-1 " + " ".join(["3:1"] * 10)]
    frame, _ = read("frappe", [write(tmp_path / "frappe.libfm", lines)])
    assert frame["label"].to_list() == [1.0, 0.0]
    assert frame.row(0)[1:] == tuple(index * 100 + 7 for index in range(10))
    assert frame.columns[1:3] == ["user", "item"] and len(frame.columns) == 11


@pytest.mark.parametrize(
    "line, message",
    [
        ("0 " + " ".join(["3:1"] * 10), "label: expected -1 or 1, got '0'"),
        ("1 " + " ".join(["3:1"] * 9) + " 3:2", "city: expected a libFM 'index:1' token, got '3:2'"),
        ("1 " + " ".join(["3:1"] * 9), "expected 11 space-separated fields, found 10"),
    ],
)
def test_frappe_bad_rows(tmp_path, line, message):
    path = write(tmp_path / "frappe.libfm", ["1 " + " ".join(["3:1"] * 10), line])
    with pytest.raises(MalformedRowError, match=f":2: {message}"):
        read("frappe", [path])


def write_movielens_latest(directory: Path) -> Path:
    directory.mkdir()
    write(
        directory / "movies.csv",
        [
            "movieId,title,genres",
            "1,Toy Story (1995),Adventure|Animation|Comedy",
            '2,"American President, The (1995)",Comedy|Drama|Romance',
            "3,Untitled,(no genres listed)",
        ],
        line_end="\r\n",
    )
    write(
        directory / "ratings.csv",
        ["userId,movieId,rating,timestamp", "7,1,4.0,300", "7,2,3.5,100", "9,3,5,200", "9,1,0.5,100"],
        line_end="\r\n",
    )
    return directory


def test_movielens_ratings_become_clicks_with_genre_bags_in_time_order(tmp_path):
    directory = write_movielens_latest(tmp_path / "ml")
    frame, _ = read("movielens", [directory])
    assert frame.columns == ["label", "userId", "movieId", "genres", "year"]
    assert frame["userId"].to_list() == [7, 9, 9, 7]  # timestamps 100, 100, 200, 300; ties keep file order
    assert frame["movieId"].to_list() == [2, 1, 3, 1]
    assert frame["label"].to_list() == [0.0, 0.0, 1.0, 1.0]
    assert frame["year"].to_list() == [1995, 1995, MISSING_ID, 1995]
    genres = frame["genres"].to_list()
    assert [len(bag) for bag in genres] == [3, 3, 1, 3] and genres[2] == [MISSING_ID]
    assert set(genres[0]) & set(genres[1]) == {string_id("Comedy")}
    assert len({*genres[0], *genres[1]}) == 5


def test_string_ids_are_stable_across_processes():
    code = "from recsys.data.fields import string_id; print(string_id('Comedy'), string_id('F'))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [int(value) for value in output] == [string_id("Comedy"), string_id("F")]
    assert 0 <= string_id("Comedy") < 2**63 and string_id("Comedy") != string_id("comedy")


def test_movielens_unknown_movie_is_a_bad_row_with_its_line(tmp_path):
    directory = write_movielens_latest(tmp_path / "ml")
    with (directory / "ratings.csv").open("a") as stream:
        stream.write("7,99,4.0,50\r\n")
    with pytest.raises(MalformedRowError, match=r"ratings.csv:6: movieId: 99 is not in the movies file"):
        read("movielens", [directory])
    with (directory / "ratings.csv").open("a") as stream:
        stream.write("7,1,six,60\r\n")
    frame, tally = read("movielens", [directory], skip=True)
    assert len(frame) == 4 and tally.counts == {"movieId not in movies": 1, "bad rating": 1}
    assert any("ratings.csv:7: rating: expected a number from 0 to 5, got 'six'" in line for line in tally.examples)


def test_movielens_1m_layout_adds_user_side_features(tmp_path):
    directory = tmp_path / "ml-1m"
    directory.mkdir()
    (directory / "movies.dat").write_bytes("1::Café (1999)::Drama\n2::Heat (1995)::Action|Crime\n".encode("latin-1"))
    write(directory / "users.dat", ["1::F::25::7::55117", "2::M::56::16::70072-1234"])
    write(directory / "ratings.dat", ["1::1::5::978300760", "2::2::3::978300761", "1::2::4::978300762"])
    frame, _ = read("movielens", [directory])
    assert FORMATS["movielens"].schema([directory]).sparse_features[-4:] == ("gender", "age", "occupation", "zip")
    assert frame["gender"].to_list() == [string_id("F"), string_id("M"), string_id("F")]
    assert frame["age"].to_list() == [25, 56, 25] and frame["occupation"].to_list() == [7, 16, 7]
    assert frame["year"].to_list() == [1999, 1995, 1995] and frame["label"].to_list() == [1.0, 0.0, 1.0]
    write(directory / "users.dat", ["1::F::25::7::55117", "2::M::old::16::70072"])
    with pytest.raises(ValueError, match=r"users.dat:2: Age: expected an integer, got 'old'"):
        read("movielens", [directory])


def write_movielens_100k(directory: Path) -> Path:
    """Three movies, two users and four ratings in the 100K layout (tab-separated ratings, pipe-separated Latin-1)."""
    directory.mkdir()
    flags = ["0"] * 19
    drama, action, crime = list(flags), list(flags), list(flags)
    drama[8] = "1"  # Drama
    action[1] = action[6] = "1"  # Action, Crime
    crime[0] = "1"  # unknown
    items = [
        ["1", "Café (1999)", "01-Jan-1999", "", "http://x", *drama],
        ["2", "Heat (1995)", "15-Dec-1995", "", "http://y", *action],
        ["3", "Untitled", "04-Jul-1997", "", "", *crime],
    ]
    (directory / "u.item").write_bytes("".join("|".join(item) + "\n" for item in items).encode("latin-1"))
    write(directory / "u.user", ["1|24|M|technician|85711", "2|53|F|other|94043"])
    write(directory / "ua.base", ["1\t1\t5\t300", "2\t2\t3\t100", "1\t3\t4\t200", "2\t1\t1\t400"])
    return directory


def test_movielens_100k_ratings_file_reads_with_its_directory_side_files(tmp_path):
    directory = write_movielens_100k(tmp_path / "ml-100k")
    frame, _ = read("movielens", [directory / "ua.base"])
    assert frame.columns == ["label", "userId", "movieId", "genres", "year", "gender", "age", "occupation", "zip"]
    assert frame["movieId"].to_list() == [2, 3, 1, 1]  # timestamps 100, 200, 300, 400
    assert frame["label"].to_list() == [0.0, 1.0, 1.0, 0.0]
    assert frame["genres"].to_list()[:3] == [
        [string_id("Action"), string_id("Crime")], [string_id("unknown")], [string_id("Drama")]
    ]  # fmt: skip
    assert frame["year"].to_list() == [1995, 1997, 1999, 1999]  # "Untitled": the release date's year
    assert frame["occupation"].to_list() == [string_id("other"), string_id("technician"), string_id("technician"),
                                             string_id("other")]  # fmt: skip
    assert frame["age"].to_list() == [53, 24, 24, 53] and frame["zip"].to_list()[0] == string_id("94043")
    with pytest.raises(FileNotFoundError, match="a MovieLens 100K directory without u.data; give one of its "
                                                r"ratings files \(ua.base\)"):  # fmt: skip
        read("movielens", [directory])
    (directory / "ua.base").rename(directory / "u.data")
    assert read("movielens", [directory])[0].equals(frame)


def test_movielens_100k_bad_side_rows_name_their_line(tmp_path):
    directory = write_movielens_100k(tmp_path / "ml-100k")
    with (directory / "u.user").open("a") as stream:
        stream.write("3|old|M|writer|32067\n")
    with pytest.raises(ValueError, match=r"u.user:3: age: expected an integer, got 'old'"):
        read("movielens", [directory / "ua.base"])


@pytest.mark.skipif(not (SHARED_DATA / "ml-100k" / "ua.base").exists(), reason="no MovieLens 100K sample")
def test_the_shared_movielens_100k_sample_reads_whole(tmp_path):
    ratings = SHARED_DATA / "ml-100k" / "ua.base"
    lines = ratings.read_text().splitlines()
    cache = prepare([ratings], tmp_path / "cache", PrepareOptions(format="movielens"))
    assert sum(cache.meta["splits"].values()) == len(lines) == 90_570
    clicks = sum(int(line.split("\t")[2]) >= 4 for line in lines)
    labels = pl.concat([cache.scan(split).collect() for split in ("train", "val", "test")])["label"]
    assert labels.sum() == clicks and cache.meta["cardinalities"]["occupation"] == 21


def test_movielens_needs_a_directory_with_ratings(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a MovieLens directory"):
        read("movielens", [tmp_path])


def test_prepare_counts_every_id_of_a_bag(tmp_path):
    directory = write_movielens_latest(tmp_path / "ml")
    cache = prepare([directory], tmp_path / "cache", PrepareOptions(format="movielens", split=(1.0, 0.0, 0.0)))
    ids, counts = cache.statistics().frequencies("genres")
    frequency = dict(zip(ids.tolist(), counts.tolist()))
    assert frequency[string_id("Comedy")] == 3 and frequency[string_id("Drama")] == 1
    assert frequency[MISSING_ID] == 1 and cache.meta["format"] == "movielens"


REAL_SAMPLES = {
    "avazu": (["avazu/train.csv", "avazu/dev.csv"], 8_087 + 480),
    "frappe": (["frappe/frappe.validation.libfm"], 57_722),
    "movielens": (["movielens-latest-small"], 100_836),
}


@pytest.mark.parametrize("name", sorted(REAL_SAMPLES))
def test_real_samples_prepare_without_bad_rows(tmp_path, name):
    relative, rows = REAL_SAMPLES[name]
    paths = [SHARED_DATA / path for path in relative]
    if not all(path.exists() for path in paths):
        pytest.skip(f"real {name} sample absent from {SHARED_DATA}")
    cache = prepare(paths, tmp_path / name, PrepareOptions(format=name))
    assert sum(cache.meta["splits"].values()) == rows and cache.meta["bad_rows"]["skipped"] == 0
    frame = pl.concat([cache.scan(split).collect() for split in ("train", "val", "test")])
    positive_rate = frame[cache.schema.label].mean()
    assert 0.05 < positive_rate < 0.6 and not math.isnan(positive_rate)
    for feature in cache.schema.sparse_features:
        assert cache.statistics().cardinalities[feature] >= 1
    if name == "movielens":
        assert isinstance(frame.schema["genres"], pl.List) and frame["genres"].list.len().max() > 1

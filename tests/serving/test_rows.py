"""Serving-side encoding of raw rows equals `recsys data prepare` on the same raw values (no training/serving skew)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.bad_rows import BadRowTally, MalformedRowError
from recsys.data.fields import Count, Hex, HourOfDay, Kind, Label, LibFMIndex, String, StringBag
from recsys.data.formats import FORMATS
from recsys.data.text import TextFormat
from recsys.serving.rows import RowEncoder, RowError
from tests.conftest import SHARED_DATA, modules_loaded_by, write_movielens_like

INTEGERS = ["0", "12", "-5", "+5", "0012", "9223372036854775807", "-9223372036854775808", "", "1_000", " 3", "3 ", " ",
            "3.0", "1e3", "99999999999999999999", "٣", "0x10"]  # fmt: skip
HEXES = ["0", "ffffffff", "FFFFFFFF", "fF", "00000000", "1", "", "0x1f", "+1", "-1", "g1", " 1f", "123456789", "٣"]
HOURS = ["14102100", "14102923", "00010100", "99123123", "14102124", "14023100", "1410210", "141021000", "", "abcdefgh"]
LIBFM = ["3:1", "0:1", "12:1.0", "12:1.", "12:2", "12", ":1", "-3:1", "٣:1", "3:1 "]
STRINGS = ["Comedy", "", " x", "x ", "ü", "a|b", "3", "(no genres listed)"]
BAGS = ["Comedy|Romance", "Comedy", "", "a||b", "|", "x|", "ü|Drama", " a|b "]
KINDS = [(Count(), INTEGERS), (Kind(), INTEGERS), (Hex(), HEXES), (HourOfDay(), HOURS), (LibFMIndex(), LIBFM),
         (String(), STRINGS), (StringBag(), BAGS)]  # fmt: skip


def one_field_format(kind: Kind) -> TextFormat:
    return TextFormat(name="probe", title="probe", separator="\t", fields=(("label", Label()), ("x", kind)))


@pytest.mark.parametrize("kind, values", KINDS, ids=lambda item: type(item).__name__ if isinstance(item, Kind) else "")
def test_each_value_is_accepted_and_encoded_exactly_as_prepare_does(tmp_path, kind, values):
    text = one_field_format(kind)
    encoder = RowEncoder.from_dict(
        {
            "raw_fields": text.raw_fields(),
            "dense_features": text.schema.dense_features,
            "sparse_features": text.schema.sparse_features,
        }  # fmt: skip
    )
    for value in values:
        path = tmp_path / "probe.tsv"
        path.write_text(f"1\t{value}\n")
        try:
            prepared = pl.concat([frame for frame, _ in text.read([path], BadRowTally())])
        except MalformedRowError:
            with pytest.raises(RowError, match="row 0: x: expected"):
                encoder.encode([{"label": 1, "x": value}])
            continue
        encoded = encoder.encode([{"label": 1, "x": value}])
        for name in text.schema.dense_features:
            assert encoded.dense[0, text.schema.dense_features.index(name)] == prepared[name][0], (value, name)
        for name in text.schema.sparse_features:
            ids = prepared[name][0]
            expected = ids.to_list() if isinstance(ids, pl.Series) else [ids]  # a bag, or one id
            assert encoded.ids[name].bags() == [expected], (value, name)


@pytest.mark.parametrize("name", ["criteo", "avazu", "frappe"])
def test_real_rows_encode_as_prepared(tmp_path, name):
    paths = {
        "criteo": [SHARED_DATA / "criteo" / "train_8k.tsv"],
        "avazu": [SHARED_DATA / "avazu" / "dev.csv"],
        "frappe": [SHARED_DATA / "frappe" / "frappe.validation.libfm"],
    }[name]
    if not paths[0].exists():
        pytest.skip(f"real {name} sample absent")
    raw_format = FORMATS[name]
    schema = raw_format.schema(paths)
    prepared = pl.concat([frame for frame, _ in raw_format.read(paths, BadRowTally(), 1 << 20)]).head(500)
    text = {"criteo": "\t", "avazu": ",", "frappe": " "}[name]
    fields = [field["name"] for field in raw_format.raw_fields(paths)]
    lines = paths[0].read_text().splitlines()[:500]
    rows = [dict(zip(fields, (value or None for value in line.split(text)))) for line in lines]
    encoder = RowEncoder.from_dict(
        {
            "raw_fields": raw_format.raw_fields(paths),
            "dense_features": schema.dense_features,
            "sparse_features": schema.sparse_features,
        }  # fmt: skip
    )
    encoded = encoder.encode(rows)
    expected_dense = prepared.select(schema.dense_features).to_numpy() if schema.dense_features else None
    if expected_dense is not None:
        np.testing.assert_array_equal(encoded.dense, expected_dense.astype(np.float32))
    for feature in schema.sparse_features:
        assert encoded.ids[feature].values.tolist() == prepared[feature].to_list(), feature


def test_movielens_rows_with_genre_names_encode_as_prepared(tmp_path):
    directory = write_movielens_like(tmp_path / "raw", ratings=200)
    raw_format = FORMATS["movielens"]
    schema = raw_format.schema([directory])
    prepared = next(raw_format.read([directory], BadRowTally(), 1 << 20))[0]
    movies = pl.read_csv(directory / "movies.csv")
    ratings = pl.read_csv(directory / "ratings.csv").join(movies, on="movieId", how="left", maintain_order="left")
    rows = [
        {"userId": user, "movieId": movie, "genres": genres, "year": int(title[-5:-1])}
        for user, movie, title, genres in ratings.sort("timestamp", maintain_order=True)
        .select("userId", "movieId", "title", "genres")
        .iter_rows()
    ]
    encoded = RowEncoder.from_dict(
        {
            "raw_fields": raw_format.raw_fields([directory]),
            "dense_features": [],
            "sparse_features": schema.sparse_features,
        }  # fmt: skip
    ).encode(rows)
    assert encoded.dense.shape == (len(rows), 0)
    assert encoded.ids["genres"].bags() == prepared["genres"].to_list()
    for feature in ("userId", "movieId", "year"):
        assert encoded.ids[feature].values.tolist() == prepared[feature].to_list()


@pytest.fixture
def criteo_encoder() -> RowEncoder:
    return make_criteo_encoder()


def make_criteo_encoder() -> RowEncoder:
    raw_format = FORMATS["criteo"]
    schema = raw_format.schema([])
    return RowEncoder.from_dict(
        {
            "raw_fields": raw_format.raw_fields([]),
            "dense_features": schema.dense_features,
            "sparse_features": schema.sparse_features,
        }  # fmt: skip
    )


def criteo_row(**changes) -> dict:
    row = {f"I{index}": index for index in range(1, 14)} | {f"C{index}": "68fd1e64" for index in range(1, 27)}
    return row | changes


@pytest.mark.parametrize(
    "row, message",
    [
        (criteo_row(C40="1"), r"row 0: unknown field\(s\) 'C40'"),
        ({key: value for key, value in criteo_row().items() if key != "I3"}, r"row 0: missing field\(s\) I3"),
        (criteo_row(I2=float("nan")), "row 0: I2: expected an integer, got nan"),
        (criteo_row(I2=float("inf")), "row 0: I2: expected an integer, got inf"),
        (criteo_row(I2=2.5), "row 0: I2: expected an integer, got 2.5"),
        (criteo_row(I2=True), "row 0: I2: expected an integer, got True"),
        (criteo_row(C1=12), "row 0: C1: expected an unsigned hex string"),
        ([1, 2], "row 0: expected an object keyed by field name, got list"),
    ],
)
def test_bad_rows_are_named_errors(criteo_encoder, row, message):
    with pytest.raises(RowError, match=message):
        criteo_encoder.encode([row])


def test_labels_are_accepted_and_ignored_and_missing_values_are_allowed(criteo_encoder):
    encoded = criteo_encoder.encode([criteo_row(label=1, I1=None, C1=None, C2="")])
    assert encoded.dense[0, 0] == 0.0 and encoded.ids["C1"].bags() == [[-1]] and encoded.ids["C2"].bags() == [[-1]]


def test_serving_encoder_imports_neither_polars_nor_training_code():
    assert modules_loaded_by("import recsys.serving.rows", ("polars", "recsys.train", "mlflow")) == []


def test_unknown_kinds_and_unproduced_features_are_refused():
    with pytest.raises(ValueError, match="unknown kind 'float'"):
        RowEncoder.from_dict({"raw_fields": [{"name": "x", "kind": "float", "outputs": ["x"]}],
                              "dense_features": [], "sparse_features": []})  # fmt: skip
    with pytest.raises(ValueError, match="produces the model's feature"):
        RowEncoder.from_dict({"raw_fields": [], "dense_features": ["I1"], "sparse_features": []})


def test_a_prepared_cache_records_the_encoder_of_its_raw_rows(synthetic_cache):
    schema = synthetic_cache.schema
    encoder = RowEncoder.from_dict(
        {
            "raw_fields": synthetic_cache.meta["raw_fields"],
            "dense_features": schema.dense_features,
            "sparse_features": schema.sparse_features,
        }  # fmt: skip
    )
    encoded = encoder.encode([criteo_row(I1=0, C1="0000000a")])
    assert encoded.dense[0, 0] == 0.0 and encoded.ids["C1"].bags() == [[10]] and len(encoded.ids) == 26


RAW_VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([*INTEGERS, *HEXES, True, 1.5, float("nan"), [], {}, "1\n", "a\nb"]),
    st.text(alphabet="0123456789abcdefABCDEFx+- \n", max_size=10),
)


def encoded_row_by_row(encoder: RowEncoder, rows: list[dict]) -> tuple[np.ndarray, dict[str, list]]:
    """The slow reference: every row alone through `encode_row`."""
    prepared = [encoder.encode_row(row, index) for index, row in enumerate(rows)]
    dense = np.array([[values[name] for name in encoder.dense_features] for values in prepared], dtype=np.float32)
    return dense.reshape(len(rows), -1), {
        name: [[values[name]] for values in prepared] for name in encoder.sparse_features
    }


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    changes=st.lists(
        st.tuples(
            st.integers(0, 7),
            st.sampled_from([f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]),
            RAW_VALUES,
        ),
        max_size=6,
    )  # fmt: skip
)
def test_batches_encode_as_their_rows_do_alone_and_fail_at_the_same_row(changes):
    encoder = make_criteo_encoder()
    rows = [criteo_row(I1=row, C1=f"{row:08x}") for row in range(8)]
    for row, field, value in changes:
        rows[row][field] = value
    try:
        expected = encoded_row_by_row(encoder, rows)
    except RowError as error:
        with pytest.raises(RowError) as raised:
            encoder.encode(rows)
        assert str(raised.value) == str(error)
        return
    encoded = encoder.encode(rows)
    np.testing.assert_array_equal(encoded.dense, expected[0])
    assert {name: ids.bags() for name, ids in encoded.ids.items()} == expected[1]


@pytest.mark.parametrize("value", ["12\n", "1f\n", "\n"])
def test_a_trailing_newline_is_refused_as_prepare_would_never_read_one(criteo_encoder, value):
    field = "I1" if value[0] == "1" and value[1] == "2" else "C1"
    with pytest.raises(RowError, match=f"row 0: {field}: expected"):
        criteo_encoder.encode([criteo_row(**{field: value})])


def test_data_never_imports_serving():
    every_module = (
        "import pkgutil, importlib, recsys.data as data; "
        "[importlib.import_module(f'recsys.data.{module.name}') for module in pkgutil.iter_modules(data.__path__)]"
    )
    assert modules_loaded_by(every_module, ("recsys.serving", "recsys.train", "recsys.export")) == []

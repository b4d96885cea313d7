from segflow.tasks.pipeline.ledger import Ledger, source_fingerprint, stage_key


def test_ledger_skips_finished_and_flags_interrupted(tmp_path):
    ledger = Ledger(tmp_path)
    key = stage_key({"epochs": 3}, "data")
    assert ledger.done("train", key) is None and not ledger.interrupted("train", key)
    ledger.start("train", key)
    reopened = Ledger(tmp_path)  # e.g. after a crash
    assert reopened.interrupted("train", key) and reopened.done("train", key) is None
    assert not reopened.interrupted("train", stage_key({"epochs": 4}, "data"))
    reopened.finish("train", key, {"model_uri": "models:/m/1"})
    assert Ledger(tmp_path).done("train", key) == {"model_uri": "models:/m/1"}
    assert not Ledger(tmp_path).interrupted("train", key)
    assert Ledger(tmp_path).done("train", stage_key({"epochs": 4}, "data")) is None


def test_source_fingerprint_sees_added_and_edited_files(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"1")
    before = source_fingerprint(tmp_path)
    assert source_fingerprint(tmp_path) == before
    (tmp_path / "images" / "b.png").write_bytes(b"2")
    added = source_fingerprint(tmp_path)
    assert added != before
    (tmp_path / "images" / "b.png").write_bytes(b"22")
    assert source_fingerprint(tmp_path) != added

"""Produce with each client's defaults and with every compression codec, read everything
back with both clients, and check the high watermark equals what was acked.

Regression guard: lz4 batches were once acked and silently dropped, so every case checks
count, content at the acked offsets, and the high watermark."""

import pytest
from kafkautil import (
    CODECS,
    Rec,
    assert_same_records,
    confluent_produce,
    confluent_read_all,
    kafka_python_read_all,
    make_records,
    watermarks,
)

N = 300


def kafka_python_produce(bootstrap: str, topic: str, recs: list[Rec], codec: str) -> list[Rec]:
    from kafka import KafkaProducer

    conf = {} if codec == "none" else {"compression_type": codec}
    p = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=30000, **conf)
    try:
        futures = [(r, p.send(topic, value=r.value, key=r.key, headers=r.headers or None)) for r in recs]
        p.flush(timeout=60)
        for r, f in futures:
            md = f.get(timeout=30)
            r.partition, r.offset = md.partition, md.offset
    finally:
        p.close(timeout=10)
    return recs


def check_log(bootstrap: str, topic: str, sent: list[Rec]) -> None:
    offsets = sorted((r.partition, r.offset) for r in sent)
    assert len(set(offsets)) == len(sent), "two acked records share a (partition, offset)"

    wm = watermarks(bootstrap, topic)
    total = sum(hi - lo for lo, hi in wm.values())
    assert total == len(sent), f"high watermarks {wm} account for {total} records, acked {len(sent)}"
    for p, (lo, hi) in wm.items():
        acked = sorted(r.offset for r in sent if r.partition == p)
        assert acked == list(range(lo, hi)), f"partition {p}: acked offsets != [{lo}, {hi})"

    got = confluent_read_all(bootstrap, topic, expected=len(sent))
    assert_same_records(sent, got)
    got_kp = kafka_python_read_all(bootstrap, topic)
    assert_same_records(sent, got_kp)


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_kafka_codec(broker, topic_name, codec):
    recs = make_records(N, f"ck-{codec}", seed=CODECS.index(codec))
    conf = {} if codec == "none" else {"compression.codec": codec}
    sent = confluent_produce(broker.bootstrap, topic_name, recs, conf)
    check_log(broker.bootstrap, topic_name, sent)


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_codec(broker, topic_name, codec):
    recs = make_records(N, f"kp-{codec}", seed=100 + CODECS.index(codec))
    sent = kafka_python_produce(broker.bootstrap, topic_name, recs, codec)
    check_log(broker.bootstrap, topic_name, sent)


def test_mixed_codecs_one_partition(broker, topic_name):
    """Batches of different codecs interleaved in one partition must all survive."""
    sent = []
    for round_ in range(2):
        for codec in CODECS:
            recs = make_records(40, f"mix{round_}-{codec}", seed=round_ * 10 + len(codec))
            if round_ == 0:
                conf = {} if codec == "none" else {"compression.codec": codec}
                sent += confluent_produce(broker.bootstrap, topic_name, recs, conf)
            else:
                sent += kafka_python_produce(broker.bootstrap, topic_name, recs, codec)
    check_log(broker.bootstrap, topic_name, sent)

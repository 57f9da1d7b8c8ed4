"""The llama.cpp columns run in a child process: a build that crashes costs its columns and a
reason, never the benchmark."""

from __future__ import annotations

import os
import signal

import pytest

from bench import llama_cpp_column
from bench.llama_cpp_column import ColumnFailed, LlamaCppProcess


def crash_on_first_generation(conn, gguf, num_threads, n_ctx, lookups):
    """A child that loads, says ready, and segfaults in its first generation (as a bad build does)."""
    conn.send("ready")
    conn.recv()
    os.kill(os.getpid(), signal.SIGSEGV)


def raise_in_lookup(conn, gguf, num_threads, n_ctx, lookups):
    """A child whose prompt-lookup variant raises (as llama-cpp-python 0.3.36 did on long prompts)."""
    conn.send("ready")
    while (message := conn.recv()) is not None:
        variant = message[0]
        conn.send(("error", "ValueError: could not broadcast") if variant != "plain" else ([7, 8], 0.5))


def crash_while_loading(conn, gguf, num_threads, n_ctx, lookups):
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_crash_in_generation_is_a_column_failure_with_the_signal(monkeypatch, tmp_path):
    monkeypatch.setattr(llama_cpp_column, "_serve", crash_on_first_generation)
    process = LlamaCppProcess(tmp_path / "m.gguf", 1, 64, {2}, lookups=(2,))
    assert process.variants == ["plain", "lookup2"]
    column = process.column("plain")
    with pytest.raises(ColumnFailed, match="died \\(signal 11\\)"):
        column([1, 2, 3], 4)
    with pytest.raises(ColumnFailed, match="signal 11"):              # and every later call says so at once
        process.column("lookup2")([1, 2, 3], 4)
    process.close()


def test_a_crash_while_loading_is_reported_at_construction(monkeypatch, tmp_path):
    monkeypatch.setattr(llama_cpp_column, "_serve", crash_while_loading)
    with pytest.raises(ColumnFailed, match="signal 11"):
        LlamaCppProcess(tmp_path / "m.gguf", 1, 64, {2})


def test_an_exception_in_one_variant_drops_that_column_only(monkeypatch, tmp_path):
    monkeypatch.setattr(llama_cpp_column, "_serve", raise_in_lookup)
    process = LlamaCppProcess(tmp_path / "m.gguf", 1, 64, {2}, lookups=(2,))
    with pytest.raises(ColumnFailed, match="lookup2 raised ValueError"):
        process.column("lookup2")([1, 2, 3], 4)
    assert process.column("plain")([1, 2, 3], 4).tokens == [7, 8]      # plain goes on
    with pytest.raises(ColumnFailed, match="lookup2"):
        process.column("lookup2")([1, 2, 3], 4)
    process.close()

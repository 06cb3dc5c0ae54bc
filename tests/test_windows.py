import numpy as np
import pytest

from clipva.windows import Window, merge_windows, random_window, window_starts

CASES = [
    (n, length, stride)
    for n in (1, 2, 5, 7, 16, 17, 31, 64, 100)
    for length in (1, 3, 8, 16)
    for stride in sorted({1, max(1, length // 2), length})
]


@pytest.mark.parametrize("n,length,stride", CASES)
def test_window_starts_cover(n, length, stride):
    starts = window_starts(n, length, stride)
    covered = np.zeros(n, int)
    for s in starts:
        covered[s : s + length] += 1
        assert 0 <= s and (s + length <= n or starts == [0])
    assert (covered > 0).all()
    assert starts == sorted(set(starts)) and starts[0] == 0
    assert min(starts[-1] + length, n) == n
    if n <= length:
        assert starts == [0]
    else:
        assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))


def test_window_starts_examples():
    assert window_starts(10, 4, 4) == [0, 4, 6]
    assert window_starts(8, 4, 4) == [0, 4]
    assert window_starts(8, 4, 2) == [0, 2, 4]
    assert window_starts(3, 8, 2) == [0]
    assert window_starts(8, 8, 8) == [0]
    assert window_starts(5, 3, 1) == [0, 1, 2]


@pytest.mark.parametrize("args", [(10, 0, 1), (10, 4, 0), (10, 4, 5), (0, 4, 2)])
def test_window_starts_errors(args):
    with pytest.raises(ValueError):
        window_starts(*args)


def _cut(full, starts, length):
    return [full[s : s + length] for s in starts]


@pytest.mark.parametrize("n,length,stride", CASES)
def test_merge_reproduces_full_prediction(n, length, stride):
    full = np.random.default_rng(n * 100 + length).standard_normal((n, 2)).astype(np.float32)
    starts = window_starts(n, length, stride)
    merged = merge_windows(n, starts, _cut(full, starts, length))
    assert merged.shape == (n, 2) and merged.dtype == np.float32
    np.testing.assert_array_equal(merged, full)


def test_merge_agreeing_constant_windows():
    starts = window_starts(50, 8, 3)
    preds = [np.full((8, 2), [0.3, -0.7]) for _ in starts]
    np.testing.assert_array_equal(merge_windows(50, starts, preds), np.tile([0.3, -0.7], (50, 1)))


def test_merge_single_cover_exact_and_weighted_between():
    # frames 0..3 only window 0, frames 8..11 only window 1, 4..7 both
    a, b = np.full((8, 1), 1.0 / 3), np.full((8, 1), 7.0 / 11)
    merged = merge_windows(12, [0, 4], [a, b])[:, 0]
    assert (merged[:4] == a[0, 0]).all() and (merged[8:] == b[0, 0]).all()
    mid = merged[4:8]
    assert ((mid > a[0, 0]) & (mid < b[0, 0])).all()
    assert (np.diff(mid) > 0).all()  # moving from window 0's edge towards window 1's centre


def test_merge_favours_centre():
    # frame 4 is window 0's centre-ish and window 1's first frame
    merged = merge_windows(12, [0, 4], [np.zeros((8, 1)), np.ones((8, 1))])[:, 0]
    assert merged[4] < 0.5 and merged[7] > 0.5


def test_merge_errors():
    with pytest.raises(ValueError, match="not covered"):
        merge_windows(10, [0, 6], [np.zeros((4, 2)), np.zeros((4, 2))])
    with pytest.raises(ValueError, match="outside"):
        merge_windows(10, [0, 8], [np.zeros((8, 2)), np.zeros((4, 2))])
    with pytest.raises(ValueError):
        merge_windows(10, [0], [np.zeros((10, 2)), np.zeros((10, 2))])
    with pytest.raises(ValueError):
        merge_windows(10, [0, 2], [np.zeros((8, 2)), np.zeros((8, 3))])
    with pytest.raises(ValueError):
        merge_windows(10, [], [])


def test_random_window():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(500):
        start, stop = random_window(20, 8, rng)
        assert stop - start == 8 and 0 <= start and stop <= 20
        seen.add(start)
    assert seen == set(range(13))
    assert random_window(5, 8, rng) == (0, 5)
    assert random_window(8, 8, rng) == (0, 8)
    with pytest.raises(ValueError):
        random_window(0, 8, rng)


def test_a_window_checks_its_stride_and_keeps_its_saved_form():
    window = Window.from_dict({"window": 16, "stride": 8})
    assert (window.length, window.stride) == (16, 8) and window.to_dict() == {"window": 16, "stride": 8}
    for length, stride in ((8, 9), (0, 1), (8, 0)):
        with pytest.raises(ValueError, match="1 <= stride <= window"):
            Window(length, stride)

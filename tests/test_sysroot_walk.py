"""SysRoot._walk's branches the public calls cannot reach on a quiet file system: a final that
fails on a link as its last component (followed, or not when follow_last=False), and the cap on
links (issue 21: _walk was split into helpers; these pin what it did)."""

from __future__ import annotations

import errno
import os

import pytest

from gpunode.host.sysroot import MAX_LINKS, SysRoot


def _open_nofollow(dfd: int, name: str) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)  # ELOOP on a link
    try:
        return os.read(fd, 100).decode()
    finally:
        os.close(fd)


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "f").write_text("x\n")
    os.symlink("f", tmp_path / "etc" / "rel")
    os.symlink("/etc/f", tmp_path / "etc" / "abs")
    os.symlink("self", tmp_path / "etc" / "self")
    return SysRoot(tmp_path)


@pytest.mark.parametrize("link", ["rel", "abs"])
def test_a_last_link_the_final_refuses_is_followed_inside_the_root(root, link):
    assert root._walk(f"/etc/{link}", _open_nofollow) == ("x\n", [])


@pytest.mark.parametrize("link", ["rel", "abs"])
def test_a_last_link_is_not_followed_when_follow_last_is_off(root, link):
    with pytest.raises(OSError) as raised:
        root._walk(f"/etc/{link}", _open_nofollow, follow_last=False)
    assert raised.value.errno == errno.ELOOP and not isinstance(raised.value.__cause__, BaseException)


def test_a_link_loop_stops_at_the_cap(root):
    with pytest.raises(OSError) as raised:
        root._walk("/etc/self", _open_nofollow)
    assert raised.value.errno == errno.ELOOP and raised.value.strerror == "too many levels of symbolic links"
    assert MAX_LINKS >= 8


def test_a_file_on_the_way_is_no_link_and_fails_as_it_was(root):
    with pytest.raises(NotADirectoryError) as raised:
        root._walk("/etc/f/x", _open_nofollow)
    assert raised.value.__suppress_context__  # readlink's EINVAL is not chained onto it

"""gemm_result with every check failing at once: the problems in their order, joined, and both
lists in the detail (pinned when gemm_result was split into helpers, issue 21)."""

from gpunode.diag.backend import Mismatch, Reference
from gpunode.diag.gemm import GemmRun, gemm_result


def test_all_problems_of_a_run_are_named_in_order():
    ref = Reference(b"r", 3.5, 2, 0.25, 3, 9.0, [{"row": 1, "col": 2, "got": 1.5, "want": -1.5}])
    run = GemmRun(1, "bf16", 64, reference=ref, products=19, checked_products=19, seconds=1.0,
                  mismatches=[Mismatch(7, 4, 0.5)], mismatch_count=2)
    result = gemm_result(run)
    assert result.status == "FAIL"
    assert result.message == (
        "GPU1: wrong results: product 0 fails its ABFT checksum on 2 row(s), worst 3.5x the bf16 error bound; "
        "product 0 has 3 element(s) off the full-precision product, first C[1,2] = 1.5 instead of -1.5; "
        "products 0-2 of the same inputs differ (row checksums by up to 0.25); "
        "2 product(s) differ from the reference; first: product 7, 4 row checksum(s) off by up to 0.5")
    assert result.detail == {"wrong_elements": [{"row": 1, "col": 2, "got": 1.5, "want": -1.5}],
                             "mismatches": [{"iteration": 7, "rows": 4, "max_abs": 0.5}]}
    assert list(result.figures) == ["products", "products_checked", "dtype", "m", "n", "k", "seconds",
                                    "abft_max_ratio", "element_max_ratio"]

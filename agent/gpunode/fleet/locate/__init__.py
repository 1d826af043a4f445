"""`gpunode fleet locate`: find the bad node or the bad link among N with disjoint pair tests."""

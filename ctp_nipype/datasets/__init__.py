"""Public stroke datasets to BIDS: the CTP scans with their timing, the reference software's maps and the
lesion masks as a derivative dataset (:mod:`.isles`: ISLES 2018 and ISLES 2024)."""

from .isles import LAYOUTS, DatasetCase, DatasetError, convert_dataset, find_cases

__all__ = ["LAYOUTS", "DatasetCase", "DatasetError", "convert_dataset", "find_cases"]

"""The diff engine (DESIGN §8): what changed between two versions, in time proportional to the change.

`frames` diffs the frame and label maps, `labels` matches the annotations of one frame, `distribution`
counts classes and metadata values, `compare` puts them together for two root sets.
"""

from dsvc.diff.compare import Comparison, FrameDetail, details
from dsvc.diff.distribution import Counts, Distribution, Sides, count, read_sides
from dsvc.diff.frames import ASPECTS, FrameChange, Summary, diff_frames, frame_change, overlap
from dsvc.diff.labels import LABEL_KINDS, LabelChange, box_iou, label_changes

__all__ = [
    "ASPECTS",
    "LABEL_KINDS",
    "Comparison",
    "Counts",
    "Distribution",
    "FrameChange",
    "FrameDetail",
    "LabelChange",
    "Sides",
    "Summary",
    "box_iou",
    "count",
    "details",
    "diff_frames",
    "frame_change",
    "label_changes",
    "overlap",
    "read_sides",
]

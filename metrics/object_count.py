"""object_count: number of boxes in the frame.

Crowded frames are hard for detectors and easy to under-label; ``worse="high"``.
"""
import qualmet


@qualmet.metric(name="object_count", level="frame", worse="high", vectorised=True,
                description="number of boxes in the frame")
def object_count(annotations, images):
    return annotations.groupby("image_id").size().reindex(images["id"].to_numpy(), fill_value=0).astype(float)

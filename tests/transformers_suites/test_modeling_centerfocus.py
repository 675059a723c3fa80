"""transformers' `ModelTesterMixin` (tests/test_modeling_common.py) on the CenterFocus models.

Two test classes, as transformers splits multi-part models: the encoder-decoder captioner (`CenterFocusModel`,
`CenterFocusForConditionalGeneration`) and the vision-only `CenterFocusForImageClassification` (other inputs and
outputs). `PipelineTesterMixin` is not run: tests/test_pipeline_mixin.py imports ~30 modules of tests/pipelines/, which
the sdist does not ship.
"""

import inspect
import os
import tempfile
import unittest
from unittest import mock

from transformers.models.auto import modeling_auto

from centerfocus import (
    CenterFocusConfig,
    CenterFocusForConditionalGeneration,
    CenterFocusForImageClassification,
    CenterFocusModel,
)

from ._upstream import TRANSFORMERS_5, load_or_skip
from .testers import CenterFocusForImageClassificationTester, CenterFocusModelTester


common = load_or_skip("test_modeling_common")
ModelTesterMixin = common.ModelTesterMixin

# The mixins decide what a model class is (base model, image-text-to-text head, image classifier: which labels to
# build, which tests apply) by its name in transformers' static `MODEL_*_MAPPING_NAMES` dicts, which only list in-tree
# models; `AutoModel*.register` (what importing centerfocus does) fills the lazy mappings instead. While the tests run,
# the class names are added to the name dicts under the Auto classes centerfocus registers them with. The dicts feed
# the lazy Auto mappings only for model types in CONFIG_MAPPING_NAMES, which "centerfocus" is not, so loading is
# unaffected.
AUTO_CLASS_NAMES = {
    "MODEL_MAPPING_NAMES": "CenterFocusModel",
    "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES": "CenterFocusForConditionalGeneration",
    "MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES": "CenterFocusForConditionalGeneration",  # transformers 4 only
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES": "CenterFocusForImageClassification",
}


class CenterFocusTestMixin:
    # `test_can_init_all_missing_weights` (does `_init_weights` cover every weight?) runs only for models it dates to
    # 2023 or later, by the "# Copyright YYYY" line of the config's source file; configuration_centerfocus.py has
    # none (year 0). transformers 5 has this switch; for 4.x, see the override below.
    test_can_init_all_missing_weights_before_2023 = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for name, class_name in AUTO_CLASS_NAMES.items():
            if hasattr(modeling_auto, name):
                patcher = mock.patch.dict(getattr(modeling_auto, name), {"centerfocus": class_name})
                patcher.start()
                cls.addClassCleanup(patcher.stop)

    if not TRANSFORMERS_5:

        def test_can_init_all_missing_weights(self):
            # transformers 4 has no switch: give the dating heuristic a source file with a copyright year
            real_getfile = inspect.getfile
            with tempfile.TemporaryDirectory() as folder:
                dated = os.path.join(folder, "configuration_centerfocus.py")
                with open(dated, "w", encoding="utf-8") as handle:
                    handle.write("# Copyright 2025 CenterFocus\n")

                def getfile(obj):
                    return dated if obj is CenterFocusConfig else real_getfile(obj)

                with mock.patch.object(common.inspect, "getfile", getfile):
                    super().test_can_init_all_missing_weights()


NO_GENERATION_TESTS = ("GenerationTesterMixin lives in transformers' tests/generation/test_utils.py, which the sdist "
                       "does not ship; the harness's stand-in is empty, so no generate() tests run to inherit")


class CenterFocusModelTest(CenterFocusTestMixin, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (CenterFocusModel, CenterFocusForConditionalGeneration)
    is_encoder_decoder = True
    # transformers 4.x flags for features CenterFocus does not offer: no `head_mask` inputs, no `prune_heads`
    test_pruning = False
    test_head_masking = False

    def setUp(self):
        self.model_tester = CenterFocusModelTester(self)

    def test_model(self):
        config, inputs = self.model_tester.prepare_config_and_inputs()
        self.model_tester.create_and_check_model(config, inputs)

    def test_lm_head_model(self):
        config, inputs = self.model_tester.prepare_config_and_inputs()
        self.model_tester.create_and_check_lm_head(config, inputs)

    @unittest.skip(NO_GENERATION_TESTS)
    def test_generation_tester_mixin_inheritance(self):
        pass


class CenterFocusForImageClassificationTest(CenterFocusTestMixin, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (CenterFocusForImageClassification,)
    is_encoder_decoder = False
    has_attentions = False  # a CNN stem and pooling: no attention layers
    test_pruning = False
    test_head_masking = False
    test_resize_embeddings = False  # no token embeddings

    def setUp(self):
        self.model_tester = CenterFocusForImageClassificationTester(self)

    @unittest.skip("no input embeddings: a CNN stem and an image tokenizer, no token embedding (as transformers' "
                   "ResNet/ConvNext testers skip it)")
    def test_model_get_set_embeddings(self):
        pass

    def test_model(self):
        config, inputs = self.model_tester.prepare_config_and_inputs()
        self.model_tester.create_and_check_model(config, inputs)


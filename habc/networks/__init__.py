"""The VLA policy and the critic heads."""

from habc.networks.model import HABCModel, build_model
from habc.networks.policy import make_policy_fn, sample_actions
from habc.networks.backbones import load_pretrained, register_backbone

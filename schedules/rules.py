"""The hand-written CUDA schedule of each FCM kind, as a table."""

from __future__ import annotations

from .cuda_base import FcmRule
from .cuda_dw_pw import DwPw
from .cuda_pw_dw import PwDw
from .cuda_pw_dw_pw import PwDwPw

RULES: dict[str, FcmRule] = {rule.kind: rule for rule in (DwPw(), PwDw(), PwDwPw())}

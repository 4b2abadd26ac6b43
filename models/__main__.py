"""``python -m fcm_tvm.models``: print the zoo as the markdown table of docs/models.md."""

from .registry import markdown_table

if __name__ == "__main__":
    print(markdown_table())

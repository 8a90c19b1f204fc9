"""``python -m numbagrad``: the seed notebook's autograd walkthrough, run on numbagrad."""
from .walkthrough import main

main()

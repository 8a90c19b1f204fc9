"""``python -m numbagrad``: the autograd walkthrough, run on numbagrad.

``python -m numbagrad --info`` prints what numbagrad runs on (versions, threading layer).
"""
import sys


def _main(argv):
    if argv[:1] == ["--info"]:
        from .threading_layer import info
        rows = info()
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            print(f"{label:<{width}}  {value}")
        return 0
    if argv:
        print("usage: python -m numbagrad [--info]", file=sys.stderr)
        return 2
    from .walkthrough import main
    main()
    return 0


sys.exit(_main(sys.argv[1:]))

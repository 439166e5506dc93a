"""``python -m streamrec.profiles.proto`` regenerates the gRPC modules."""

from streamrec.profiles.proto import generate

generate()

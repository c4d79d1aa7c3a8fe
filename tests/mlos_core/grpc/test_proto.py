"""The core's own .proto files against the descriptors the stock client ships: every service
method, message and field declared here must exist there with the same number, type and label,
or tritonclient would read the core's answers wrongly."""
from __future__ import annotations

import pytest

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is in the test extra")
from tritonclient.grpc import model_config_pb2, service_pb2  # noqa: E402

from mlos_core.grpc.protocol import POOL, SERVICE  # noqa: E402


def _theirs(full_name: str):
    for module in (service_pb2, model_config_pb2):
        found = module.DESCRIPTOR.message_types_by_name.get(full_name.split(".")[1])
        if found is not None:
            for part in full_name.split(".")[2:]:
                found = found.nested_types_by_name[part]
            return found
    raise AssertionError(f"tritonclient has no message {full_name}")


def _ours_messages():
    out = []

    def walk(m):
        out.append(m)
        for n in m.nested_types:
            if not n.GetOptions().map_entry:
                walk(n)

    for name in ("inference.proto", "model_config.proto"):
        for m in POOL.FindFileByName(name).message_types_by_name.values():
            walk(m)
    return out


def test_service_methods_match():
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert SERVICE.full_name == theirs.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in SERVICE.methods] == [m.name for m in theirs.methods]
    for ours, other in zip(SERVICE.methods, theirs.methods):
        assert (ours.input_type.full_name, ours.output_type.full_name) == \
               (other.input_type.full_name, other.output_type.full_name)
        assert (ours.client_streaming, ours.server_streaming) == (other.client_streaming, other.server_streaming)


@pytest.mark.parametrize("message", _ours_messages(), ids=lambda m: m.full_name)
def test_every_field_matches_the_stock_client(message):
    theirs = _theirs(message.full_name)
    for field in message.fields:
        other = theirs.fields_by_name.get(field.name)
        assert other is not None, f"{message.full_name}.{field.name} is not in tritonclient's descriptor"
        assert (field.number, field.type, field.is_repeated) == (other.number, other.type, other.is_repeated), \
            f"{message.full_name}.{field.name}"
        kind = field.message_type or field.enum_type
        other_kind = other.message_type or other.enum_type
        assert (kind.full_name if kind else None) == (other_kind.full_name if other_kind else None), \
            f"{message.full_name}.{field.name}"
        if field.containing_oneof or other.containing_oneof:
            assert field.containing_oneof.name == other.containing_oneof.name
    for enum in message.enum_types:
        values = {v.name: v.number for v in theirs.enum_types_by_name[enum.name].values}
        assert {v.name: v.number for v in enum.values} == values


def test_top_level_enum_matches():
    ours = POOL.FindEnumTypeByName("inference.DataType")
    assert {v.name: v.number for v in ours.values} == \
           {v.name: v.number for v in model_config_pb2.DESCRIPTOR.enum_types_by_name["DataType"].values}

// engine::Json, the json-c wrapper the QMP client and the simulator use.
#include "util/json.h"

#include "catch2_compat.h"

using engine::Json;
using engine::JsonError;

TEST_CASE("json: parse, access and compact text", "[qmp]")
{
    Json value = Json::parse(R"( {"return": {"status": "running", "list": [1, 2.5, true, null, "a/b"]}, "id": "7:1"} )");
    CHECK(value.member("id").as_string() == "7:1");
    Json list = value.member("return").member("list");
    REQUIRE(list.size() == 5);
    CHECK(list.at(0).as_integer() == 1);
    CHECK(list.at(1).as_number() == 2.5);
    CHECK(list.at(2).as_boolean());
    CHECK(list.at(3).is_null());
    CHECK(list.at(9).is_null());
    CHECK(value.member("missing").is_null());
    CHECK_FALSE(value.has("missing"));
    CHECK(list.text() == R"([1,2.5,true,null,"a/b"])"); // slashes stay unescaped
    CHECK(Json().text() == "null");
}

TEST_CASE("json: malformed text and trailing garbage are refused", "[qmp]")
{
    CHECK_THROWS_AS(Json::parse("{\"a\": "), JsonError);
    CHECK_THROWS_AS(Json::parse("not json"), JsonError);
    CHECK_THROWS_AS(Json::parse("{} {}"), JsonError);
    CHECK_THROWS_AS(Json::parse("{\"a\": 1,}"), JsonError);
}

TEST_CASE("json: values share json-c objects by reference count", "[qmp]")
{
    Json object = Json::object();
    object.set("n", Json::integer(1));
    Json copy = object;
    copy.set("m", Json::string("x"));
    CHECK(object.text() == R"({"n":1,"m":"x"})");
    Json member = object.member("n");
    object.remove("n");
    CHECK(member.as_integer() == 1); // still alive through its own reference
    Json array = Json::array();
    array.append(std::move(copy));
    CHECK(array.text() == R"([{"m":"x"}])");
    CHECK_THROWS_AS(array.set("k", Json()), std::logic_error);
    CHECK_THROWS_AS(object.append(Json()), std::logic_error);
}

curl --location --request GET 'https://genaiapi.cloudsway.net/v2/ai/lXynAhfbOiD/images/tasks/3374b3b0-d069-4831-a76b-ebab4df14457 ' \
--header 'Authorization: Bearer ${AccessKey}' \
--header 'User-Agent: Apifox/1.0.0 (https://apifox.com)' \
--header 'content-type: application/json' \
--header 'Accept: */*' \
--header 'Connection: keep-alive' \
--data-raw ''

curl --request POST \
--url https://genaiapi.cloudsway.net/v2/ai/lXynAhfbAiD/images/generations \
--header 'Authorization: Bearer ${AccessKey}' \
--header 'User-Agent: Apifox/1.0.0 (https://apifox.com)' \
--header 'content-type: application/json' \
--header 'Accept: */*' \
--header 'Connection: keep-alive' \
--data-raw '{
"prompts": "A fruit basket containing dragon fruit, mango, guava, apple, and banana.",
"aspect_ratio": "2:3",
"batchsize": "2",
"step": 10
}'

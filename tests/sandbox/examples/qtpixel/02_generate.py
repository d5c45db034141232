import requests

url = "https://pixel.qingchencloud.com/api/v1/generate"
headers = {
    "Authorization": "Bearer YOUR_API_KEY",
    "Content-Type": "application/json"
}
data = {"prompt": "一只可爱的猫"}

response = requests.post(url, json=data, headers=headers)
print(response.json())
